"""`facenms extract`: every face embedded into a float16 .npy."""
from .common import options_set, positive_int


def add(sub):
    x = sub.add_parser("extract", help="embed every face into a float16 .npy")
    x.add_argument("--dataset", required=True, help="image folder or RecordIO (.rec, or a folder "
                   "holding train.rec)")
    x.add_argument("--model", required=True,
                   help="proxy checkpoint, TorchScript, torch.export (.pt2) or ONNX file")
    x.add_argument("--out", required=True, help="features .npy (labels.npy is written beside)")
    x.add_argument("--labels-path", help="where to write the labels (default: labels.npy "
                   "beside --out)")
    x.add_argument("--batch-size", type=positive_int, help="faces per forward pass (default 256)")
    x.add_argument("--workers", type=int, help="DataLoader processes (default: from the cores)")
    x.add_argument("--amp", choices=["auto", "bf16", "fp16", "none"], default="auto",
                   help="autocast precision (default auto: bf16 where the device computes "
                   "it natively, fp16 on CUDA without bf16, else fp32)")
    x.add_argument("--flip", action="store_true", help="add the mirrored face's embedding")
    x.add_argument("--input-size", type=positive_int,
                   help="resize faces to this square size (default: the model's own)")
    x.add_argument("--mean", help="pixel mean: one number or 3, e.g. 127.5 (the default) or "
                   "123.7,116.3,103.5, in the model's channel order")
    x.add_argument("--std", help="pixel std: one number or 3 (default 127.5; (x-127)/128: "
                   "--mean 127 --std 128)")
    x.add_argument("--channel-order", choices=["rgb", "bgr"],
                   help="the channel order the model takes (default rgb)")
    x.add_argument("--device", help="e.g. cuda, cuda:1, cpu (default: cuda when available)")
    x.add_argument("--no-resume", action="store_true",
                   help="start afresh instead of continuing an interrupted extraction")
    x.set_defaults(func=run)


def run(args):
    from ..pipeline.extract import extract
    kw = options_set(args, ["batch_size", "workers", "device", "input_size", "labels_path",
                            "mean", "std", "channel_order"])
    kw["amp"] = None if args.amp == "none" else args.amp
    path = extract(args.dataset, args.model, args.out, flip=args.flip,
                   resume=not args.no_resume, **kw)
    print("facenms extract: features %s" % path)
