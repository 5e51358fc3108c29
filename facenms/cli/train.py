"""`facenms train-proxy`: a small proxy model trained on a subset of the identities."""
from .common import options_set


def add(sub):
    t = sub.add_parser("train-proxy", help="train a small proxy model on a subset")
    t.add_argument("--dataset", required=True, help="image folder or RecordIO")
    t.add_argument("--out", required=True, help="folder for checkpoints (proxy.pt)")
    t.add_argument("--subset", choices=["identities", "faces"],
                   help="draw the proxy subset by identities (default) or by faces")
    t.add_argument("--fraction", type=float, help="fraction of identities/faces (default 0.1)")
    t.add_argument("--seed", type=int, help="seed of the subset and the training (default 0)")
    t.add_argument("--backbone", help="iresnet18, iresnet50, mobilefacenet, ...")
    t.add_argument("--head", choices=["arcface", "cosface"],
                   help="margin softmax head (default arcface)")
    t.add_argument("--embedding-size", type=int, help="embedding dimension (default 512)")
    t.add_argument("--input-size", type=int, help="square face size in pixels (default 112)")
    t.add_argument("--epochs", type=int, help="default 10")
    t.add_argument("--batch-size", type=int, help="per process")
    t.add_argument("--lr", type=float, help="peak SGD learning rate (default 0.1)")
    t.add_argument("--amp", choices=["auto", "bf16", "fp16", "none"], default="auto",
                   help="autocast precision (default auto: bf16 where the device computes "
                   "it natively, fp16 on CUDA without bf16, else fp32)")
    t.add_argument("--workers", type=int, help="DataLoader processes (default: from the cores)")
    t.add_argument("--device", help="e.g. cuda, cpu (default: cuda when available)")
    t.add_argument("--no-resume", action="store_true", help="start over")
    t.set_defaults(func=run)


def run(args):
    from ..pipeline.proxy import train_proxy
    kw = options_set(args, ["subset", "fraction", "seed", "backbone", "head", "embedding_size",
                            "input_size", "epochs", "batch_size", "lr", "workers", "device"])
    kw["amp"] = None if args.amp == "none" else args.amp
    path = train_proxy(args.dataset, args.out, resume=not args.no_resume, **kw)
    print("facenms train-proxy: checkpoint %s" % path)
