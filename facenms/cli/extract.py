"""`facenms extract`: every face embedded into a float16 .npy."""
from .common import given


def add(sub):
    x = sub.add_parser("extract", help="embed every face into a float16 .npy")
    x.add_argument("--dataset", required=True)
    x.add_argument("--model", required=True,
                   help="proxy checkpoint, TorchScript, torch.export (.pt2) or ONNX file")
    x.add_argument("--out", required=True, help="features .npy (labels.npy is written beside)")
    x.add_argument("--labels-path")
    x.add_argument("--batch-size", type=int)
    x.add_argument("--workers", type=int)
    x.add_argument("--amp", choices=["bf16", "fp16", "none"], default="bf16")
    x.add_argument("--flip", action="store_true", help="add the mirrored face's embedding")
    x.add_argument("--input-size", type=int)
    x.add_argument("--device")
    x.add_argument("--no-resume", action="store_true")
    x.set_defaults(func=run)


def run(args):
    from ..pipeline.extract import extract
    kw = given(args, ["batch_size", "workers", "device", "input_size", "labels_path"])
    kw["amp"] = None if args.amp == "none" else args.amp
    path = extract(args.dataset, args.model, args.out, flip=args.flip,
                   resume=not args.no_resume, **kw)
    print("facenms extract: features %s" % path)
