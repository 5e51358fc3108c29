"""Each pipeline stage next to its plain-torch floor, in the same run.

    python bench/pipeline.py                       # CPU, sizes for a small machine
    python bench/pipeline.py --device cuda --n 4096 --train-n 4096
    python bench/pipeline.py --stages extract onnx --repeats 5

The faces are generated 112x112 JPEGs (facenms.data.synthetic), as an image
folder and as a RecordIO of the same images. Floors and facenms run
interleaved, ``--repeats`` times each; the table shows medians. ratio is
facenms time / floor time (1.00: no overhead); facenms runs with its default
settings but the floor's batch size. "where" splits the time into
decode / model / write / sync where a run reports it (the floor loops time
their own parts; facenms.extract prints its split in its last line).
"""
import argparse
import contextlib
import copy
import cProfile
import io
import os
import pstats
import re
import shutil
import statistics
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

from facenms.data import open_dataset  # noqa: E402
from facenms.data.synthetic import make_image_folder, make_recordio  # noqa: E402
from facenms.models import get_head, get_model  # noqa: E402
import which  # noqa: E402

STAGES = ("decode", "extract", "torchscript", "onnx", "onnx-b1", "train", "export", "run")


# ------------------------------------------------------------------ data and models

def make_data(root, n, size=112):
    per_id = 8
    kw = dict(num_identities=-(-n // per_id), images_per_identity=(per_id, per_id), size=size,
              duplicates=0.0, seed=0, fmt="jpg")
    folder = make_image_folder(os.path.join(root, "folder"), **kw)
    rec = make_recordio(os.path.join(root, "rec"), **kw)
    return folder, rec


def subset_folder(src, dst, n):
    """The first n faces of an image folder, as a new folder (whole files copied)."""
    ds = open_dataset(src)
    for i in range(min(n, len(ds))):
        rel = ds.name(i)
        os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
        shutil.copyfile(ds.path(i), os.path.join(dst, rel))
    return dst


def backbone(args):
    torch.manual_seed(0)
    return get_model(args.backbone, embedding_size=512, input_size=112).eval()


# ------------------------------------------------------------------ timing helpers

class Parts:
    """Seconds per named part, with a device sync at each boundary."""

    def __init__(self, dev):
        self.dev, self.t, self.s = dev, {}, None

    def sync(self):
        if self.dev.type == "cuda":
            torch.cuda.synchronize()

    @contextlib.contextmanager
    def __call__(self, name):
        t = time.perf_counter()
        yield
        self.sync()
        self.t[name] = self.t.get(name, 0.0) + time.perf_counter() - t


def decode(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def decoded_batches(ds, bs):
    for s in range(0, len(ds), bs):
        yield np.stack([decode(ds.path(i)) for i in range(s, min(len(ds), s + bs))])


def normalised(imgs, dev):
    x = torch.from_numpy(imgs).to(dev).permute(0, 3, 1, 2).float()
    return (x - 127.5) / 127.5


def split_of(text):
    """facenms.extract's own split from its last line, if it prints one."""
    m = re.search(r"\(decode ([\d.]+) s, model ([\d.]+) s, write ([\d.]+) s, sync ([\d.]+) s\)",
                  text)
    return None if m is None else dict(zip(("decode", "model", "write", "sync"),
                                           map(float, m.groups())))


def quiet(fn, *a, **kw):
    """fn's result and its stdout (facenms prints one summary line per stage)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        out = fn(*a, **kw)
    return out, buf.getvalue()


# ------------------------------------------------------------------ floors

def floor_decode(ds, args, dev):
    parts = Parts(dev)
    with parts("decode"):
        for _ in decoded_batches(ds, args.batch):
            pass
    return parts.t


def floor_torch(ds, model, args, dev, out):
    """Decode, normalise, forward (bf16 autocast or plain fp32, --floor-amp), L2-normalise,
    fp16, one np.save."""
    parts = Parts(dev)
    feats = None
    batches = decoded_batches(ds, args.batch)
    s = 0
    while True:
        with parts("decode"):
            imgs = next(batches, None)
        if imgs is None:
            break
        with parts("model"):
            with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16,
                                                        enabled=args.floor_amp == "bf16"):
                e = model(normalised(imgs, dev))
            e = F.normalize(e.float()).half().cpu().numpy()
        if feats is None:
            feats = np.empty((len(ds), e.shape[1]), np.float16)
        feats[s:s + len(e)] = e
        s += len(e)
    with parts("write"):
        np.save(out, feats)
    return parts.t


def floor_onnx(ds, sess, batch, args, dev, out):
    """onnxruntime alone on the same preprocessed inputs (batch: the model's fixed batch)."""
    parts = Parts(dev)
    name = sess.get_inputs()[0].name
    rows = []
    for imgs in decoded_batches(ds, args.batch):
        with parts("decode"):
            x = ((imgs.astype(np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2)
            x = np.ascontiguousarray(x)
        with parts("model"):
            step = batch or len(x)
            e = np.concatenate([sess.run(None, {name: x[s:s + step]})[0]
                                for s in range(0, len(x), step)])
            e = e / np.linalg.norm(e, axis=1, keepdims=True)
            rows.append(e.astype(np.float16))
    with parts("write"):
        np.save(out, np.concatenate(rows))
    return parts.t


class PlainFaces(torch.utils.data.Dataset):
    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return torch.from_numpy(decode(self.ds.path(i)).copy()).permute(2, 0, 1), int(self.ds.labels[i])


def floor_train(ds, args, dev, out):
    """Build, one epoch of SGD on backbone + ArcFace (autocast, flips, clip 5 as
    arcface_torch), save the weights and optimizer state."""
    parts = Parts(dev)
    with parts("model"):
        torch.manual_seed(0)
        net = torch.nn.ModuleDict(dict(
            backbone=get_model(args.backbone, embedding_size=512, input_size=112),
            head=get_head("arcface", 512, int(ds.num_classes)))).to(dev).train()
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    loader = torch.utils.data.DataLoader(PlainFaces(ds), batch_size=args.batch, shuffle=True,
                                         drop_last=True)
    it = iter(loader)
    while True:
        with parts("decode"):
            b = next(it, None)
        if b is None:
            break
        with parts("model"):
            img, y = b[0].to(dev), b[1].to(dev)
            x = (img.float() - 127.5) / 127.5
            flip = torch.rand(len(x)) < 0.5
            x = torch.where(flip.to(dev)[:, None, None, None], x.flip(-1), x)
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                logits = net["head"](net["backbone"](x), y)
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
    with parts("write"):
        torch.save(dict(net=net.state_dict(), opt=opt.state_dict()), out)
    return parts.t


def floor_copy(ds, out):
    """The kept faces' bytes, read in order and written into one file, fsynced."""
    clock = time.perf_counter  # not Parts: its ~2 us a call would slow a per-image floor
    t = {"read": 0.0, "write": 0.0}
    with open(out, "wb") as f:
        for i in range(len(ds)):
            t0 = clock()
            data = ds.read_bytes(i)
            t1 = clock()
            f.write(data)
            t["read"] += t1 - t0
            t["write"] += clock() - t1
        t0 = clock()
        f.flush()
        os.fsync(f.fileno())
        t["sync"] = clock() - t0
    return t


def floor_tree(ds, out, sync):
    """The kept faces' files copied into a tree in order (`cp`), then `sync`."""
    clock = time.perf_counter
    t = {"read": 0.0, "write": 0.0}
    made = set()
    for i in range(len(ds)):
        t0 = clock()
        data = ds.read_bytes(i)
        t1 = clock()
        dst = os.path.join(out, ds.name(i))
        if os.path.dirname(dst) not in made:
            os.makedirs(os.path.dirname(dst))
            made.add(os.path.dirname(dst))
        with open(dst, "wb") as f:
            f.write(data)
        t["read"] += t1 - t0
        t["write"] += clock() - t1
    if sync:
        t0 = clock()
        os.sync()
        t["sync"] = clock() - t0
    return t


# ------------------------------------------------------------------ the table

ROWS = []


def measure(stage, variant, n, floor, ours, repeats, where_ours=None, floor_name=None):
    """floor(), ours(): each returns its parts dict (or None); run interleaved."""
    tf, to, pf, po = [], [], [], []
    for r in range(repeats):
        for fn, ts, ps in ((floor, tf, pf), (ours, to, po)) if r % 2 == 0 else \
                ((ours, to, po), (floor, tf, pf)):
            t = time.perf_counter()
            parts = fn()
            ts.append(time.perf_counter() - t)
            ps.append(parts)
    f, o = statistics.median(tf), statistics.median(to)
    if floor_name:
        variant += " vs " + floor_name
    ROWS.append((stage, variant, n / f, n / o, o / f, _where(pf, f), where_ours or _where(po, o),
                 min(to) / min(tf)))
    print("  %-12s %-22s floor %.2f s, facenms %.2f s (%.2fx)" % (stage, variant, f, o, o / f),
          file=sys.stderr, flush=True)


def _where(parts, total):
    parts = [p for p in parts if p]
    if not parts:
        return "-"
    keys = list(parts[-1])
    med = {k: statistics.median(p.get(k, 0.0) for p in parts) for k in keys}
    rest = total - sum(med.values())
    s = " ".join("%s %.0f%%" % (k, 100 * v / total) for k, v in med.items())
    return s + (" other %.0f%%" % (100 * rest / total) if rest > 0.005 * total else "")


def print_table(args):
    print("\nfacenms pipeline vs plain torch, %s, %d threads, backbone %s, batch %d, "
          "floor precision %s, medians of %d" % (args.device, torch.get_num_threads(),
                                                 args.backbone, args.batch, args.floor_amp,
                                                 args.repeats))
    head = ("stage", "variant", "floor img/s", "facenms img/s", "ratio", "best/best",
            "floor: where", "facenms: where")
    rows = [(s, v, "%.1f" % a, "%.1f" % b, "%.2fx" % r, "%.2fx" % bb, wf, wo)
            for s, v, a, b, r, wf, wo, bb in ROWS]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    for row in [head] + rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())


# ------------------------------------------------------------------ stages

def bench_extract(stage, args, dev, tmp, small):
    from facenms.pipeline.extract import extract
    ds = open_dataset(small)
    model = backbone(args).to(dev)
    # a copy: facenms converts a module it is given to channels_last, the floor keeps it as is
    target, variant, floor = copy.deepcopy(model), "nn.Module", None
    if stage == "torchscript":
        target = os.path.join(tmp, "model.ts")
        with torch.no_grad():
            torch.jit.trace(model, torch.randn(2, 3, 112, 112, device=dev)).save(target)
        model, variant = torch.jit.load(target, map_location=dev), "TorchScript file"
    if stage in ("onnx", "onnx-b1"):
        import onnxruntime as ort
        fixed = stage == "onnx-b1"
        target = os.path.join(tmp, stage + ".onnx")
        torch.onnx.export(model.cpu(), torch.randn(1 if fixed else 2, 3, 112, 112), target,
                          dynamo=False, input_names=["data"],
                          dynamic_axes=None if fixed else {"data": {0: "n"}})
        providers = (["CUDAExecutionProvider"] if dev.type == "cuda" else []) + \
            ["CPUExecutionProvider"]
        opts = ort.SessionOptions()  # as many threads as torch (ORT's default: physical cores)
        opts.intra_op_num_threads = torch.get_num_threads()
        sess = ort.InferenceSession(target, opts, providers=providers)
        variant = "ONNX, fixed batch 1" if fixed else "ONNX, dynamic batch"

        def floor():
            return floor_onnx(ds, sess, 1 if fixed else None, args, dev,
                              os.path.join(tmp, "floor.npy"))
    if floor is None:
        def floor():
            return floor_torch(ds, model, args, dev, os.path.join(tmp, "floor.npy"))
    out = os.path.join(tmp, "f", "features.npy")

    def ours():
        _, text = quiet(extract, small, target, out, batch_size=args.batch, progress=False,
                        resume=False, device=str(dev))
        return split_of(text)
    measure(stage if stage != "extract" else "extract", variant, len(ds), floor, ours,
            args.repeats)
    if stage in ("extract", "onnx"):  # the outputs agree
        a = np.load(out).astype(np.float32)
        b = np.load(os.path.join(tmp, "floor.npy")).astype(np.float32)
        print("  min cosine facenms vs floor: %.5f" % (a * b).sum(1).min(), file=sys.stderr)


def bench_decode(args, dev, small):
    from facenms.pipeline import runtime as rt
    ds = open_dataset(small)
    workers = getattr(rt, "default_workers", lambda dev: 2)(dev)

    def ours():
        loader = torch.utils.data.DataLoader(rt.IndexedFaces(ds, size=112),
                                             batch_size=args.batch, num_workers=workers,
                                             collate_fn=getattr(rt, "collate", None))
        for _ in loader:
            pass
    measure("decode", "DataLoader, %d workers" % workers, len(ds),
            lambda: floor_decode(ds, args, dev), ours, args.repeats)


def bench_train(args, dev, tmp, train_set):
    from facenms.pipeline.proxy import train_proxy
    ds = open_dataset(train_set)

    def ours():
        quiet(train_proxy, train_set, os.path.join(tmp, "proxy"), fraction=1.0,
              backbone=args.backbone, epochs=1, batch_size=args.batch, amp="bf16",
              resume=False, progress=False, device=str(dev))
    measure("train-proxy", "1 epoch, ArcFace", len(ds) // args.batch * args.batch,
            lambda: floor_train(ds, args, dev, os.path.join(tmp, "floor.pt")), ours,
            args.repeats)


def bench_export(args, tmp, folder, rec):
    """RecordIO against its bytes copied into one file; the image folder against that too
    and against the same files copied into a tree (cp, then sync): a folder pays one
    create and, durable, one disk write per face, whatever writes it."""
    from facenms.pipeline.export import write_imagefolder, write_recordio
    runs = iter(range(1 << 30))

    def fresh(name):  # a fresh output each time: removing the last one is not export
        return os.path.join(tmp, "export-%s-%d" % (name, next(runs)))
    ds = open_dataset(rec)
    keep = np.arange(0, len(ds), 2)  # every other face, as a 50% core set
    sub = Subset(ds, keep)

    def ours():
        write_recordio(fresh("rec"), ds, keep)
    measure("export", "RecordIO -> RecordIO", len(keep),
            lambda: floor_copy(sub, fresh("floor") + ".bin"), ours, args.repeats,
            where_ours=profile_top(ours))
    ds = open_dataset(folder)
    sub = Subset(ds, keep)

    def ours():
        write_imagefolder(fresh("dir"), ds, keep, mode="copy")
    where = profile_top(ours)
    measure("export", "folder -> folder copy", len(keep),
            lambda: floor_copy(sub, fresh("floor") + ".bin"), ours, args.repeats,
            where_ours=where, floor_name="bytes, one file")
    for sync in (True, False):
        measure("export", "folder -> folder copy", len(keep),
                lambda: floor_tree(sub, fresh("tree"), sync), ours, args.repeats,
                where_ours=where, floor_name="same files, cp" + (" + sync" if sync else ""))


class Subset:
    def __init__(self, ds, keep):
        self.ds, self.keep = ds, keep

    def __len__(self):
        return len(self.keep)

    def read_bytes(self, i):
        return self.ds.read_bytes(int(self.keep[i]))

    def name(self, i):
        return self.ds.name(int(self.keep[i]))


def profile_top(fn, k=3):
    """Where export spends its time (export.py is not instrumented): top functions
    by own time."""
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.runcall(fn)
    total = time.perf_counter() - t
    st = pstats.Stats(prof)
    top = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:k]
    return " ".join("%s %.0f%%" % (f[2].strip("<>{}").replace("method ", "")[:28],
                                   100 * v[2] / total) for f, v in top)


def bench_run(args, dev, tmp, small):
    import facenms
    from facenms.pipeline import export as ex
    from facenms.pipeline.extract import extract
    from facenms.pipeline.proxy import train_proxy
    from facenms.pipeline.run import run
    proxy = dict(fraction=1.0, backbone="iresnet", model_kwargs=dict(layers=[1, 1, 1, 1],
                 width=8), embedding_size=64, input_size=112, epochs=1, batch_size=args.batch)
    ds = open_dataset(small)

    def direct():
        work = os.path.join(tmp, "direct")
        shutil.rmtree(work, ignore_errors=True)
        ck = quiet(train_proxy, small, os.path.join(work, "proxy"), progress=False,
                   resume=False, **proxy)[0]
        feats = quiet(extract, small, ck, os.path.join(work, "features.npy"), progress=False,
                      resume=False)[0]
        keep = facenms.select(np.load(feats, mmap_mode="r"),
                              np.load(os.path.join(work, "labels.npy")), ratio=0.6)
        ex.save_indices(os.path.join(work, "keep.npy"), keep)
        ex.write_recordio(os.path.join(work, "core"), ds, keep)

    def via_run():
        work = os.path.join(tmp, "run")
        shutil.rmtree(work, ignore_errors=True)
        cfg = dict(data=dict(dataset=small, work_dir=work), proxy=proxy,
                   select=dict(ratio=0.6), export=dict(format="recordio"))
        quiet(run, cfg, progress=False)
    measure("facenms run", "all stages, tiny proxy", len(ds), direct, via_run, args.repeats)


def main():
    warnings.simplefilter("ignore")  # torch.jit / the TorchScript ONNX exporter: deprecated
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=256, help="faces for decode / extract / run")
    ap.add_argument("--train-n", type=int, default=192, help="faces for one proxy epoch")
    ap.add_argument("--export-n", type=int, default=4000, help="faces for export")
    ap.add_argument("--batch", type=int, default=64, help="the floors' batch size")
    ap.add_argument("--backbone", default="iresnet18")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    ap.add_argument("--keep-data", help="generate the faces here once and reuse them")
    ap.add_argument("--floor-amp", choices=("auto", "bf16", "fp32"), default="auto",
                    help="the extraction floor's precision; auto: bf16 where the device "
                         "computes it natively, else plain fp32 (no channels_last)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    if args.floor_amp == "auto":
        from facenms.pipeline.precision import resolve_amp
        args.floor_amp = "bf16" if resolve_amp("auto", dev) == "bf16" else "fp32"
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    tmp = tempfile.mkdtemp(prefix="facenms-bench-")
    data = args.keep_data or os.path.join(tmp, "data")
    try:
        if not os.path.exists(os.path.join(data, "rec")):
            make_data(data, max(args.n, args.train_n, args.export_n))
        folder, rec = os.path.join(data, "folder"), os.path.join(data, "rec")
        small = subset_folder(folder, os.path.join(tmp, "small"), args.n)
        train_set = subset_folder(folder, os.path.join(tmp, "train"), args.train_n)
        for stage in args.stages:
            if stage == "decode":
                bench_decode(args, dev, small)
            elif stage in ("extract", "torchscript", "onnx", "onnx-b1"):
                bench_extract(stage, args, dev, tmp, small)
            elif stage == "train":
                bench_train(args, dev, tmp, train_set)
            elif stage == "export":
                bench_export(args, tmp, folder, rec)
            elif stage == "run":
                bench_run(args, dev, tmp, small)
        print_table(args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    which.announce()
    main()
