"""Feature extraction: an embedding for every face, L2-normalised, float16, in a
``.npy`` (memory-mappable by the selection) that an interrupted run resumes.

    extract("train.rec", "out/proxy/proxy.pt", "out/features.npy", flip=True)

The model is a proxy checkpoint, a TorchScript file, a ``torch.export`` program
(``.pt2``), an ONNX file (through onnxruntime) or an ``nn.Module``. Work is
cut into fixed batches of the dataset in index order, [k*B, (k+1)*B); a
batch's output bytes depend only on its faces, so the batches may run in any
order, on any number of ranks, across any number of restarts, and the file
comes out byte-identical (on the same hardware and software). While running:

    features.npy.partial     the .npy being filled (valid header, N x d float16)
    features.npy.progress    8 bytes per batch: "done" and the CRC-32 of its rows,
                             written once the rows are on disk
    features.npy.state.json  the settings the partial file was made with

When every batch is done, ``labels.npy`` (beside, by default) and
``features.npy.json`` (the settings) are written and the partial file is
renamed to ``features.npy``: a file under the final name is always complete.
A resume first checks every batch marked done against its CRC and redoes
those that fail; a partial file of the wrong size is started afresh.
"""
import hashlib
import json
import os
import struct
import sys
import time
import zlib

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..io import AtomicFiles, fsync_dir, pwrite_all, read_npy_header
from ..io.progress import progress_bar
from ..scale.dist import join
from . import runtime as rt
from .embedders import load_model
from .precision import check_amp, describe, resolve_amp

FORMAT = "facenms-features/2"
MARK = struct.Struct("<4sI")  # b"done", CRC-32 of the batch's row bytes; zeros: to do
DONE = b"done"


def batches_done(progress_path):
    """Which batches a progress file marks done (bool per batch)."""
    marks = np.fromfile(progress_path, np.uint8)
    marks = marks[:len(marks) // MARK.size * MARK.size].reshape(-1, MARK.size)
    return (marks[:, :4] == np.frombuffer(DONE, np.uint8)).all(1)


def _paths(out_path, labels_path):
    out = os.fspath(out_path)
    if labels_path is None:
        labels_path = os.path.join(os.path.dirname(os.path.abspath(out)), "labels.npy")
    return dict(out=out, labels=os.fspath(labels_path), meta=out + ".json",
                partial=out + ".partial", progress=out + ".progress",
                state=out + ".state.json")


def _diff(old, new):
    return ["%s: %r before, %r now" % (k, old.get(k), new[k]) for k in new
            if old.get(k) != new[k]]


def _where(ds, i):
    for attr in ("where", "name"):
        if hasattr(ds, attr):
            try:
                return getattr(ds, attr)(i)
            except Exception:  # only for an error message
                pass
    return "?"


def _embed(net, x, device, amp, flip):
    ctx = rt.autocast(device, amp) if net.uses_autocast else rt.autocast(device, None)
    with torch.inference_mode(), ctx:
        e = net(x)
        if flip:  # flip-sum: the embedding of the face plus its mirror image
            e = e + net(x.flip(-1))
    return e.float()


def _prepare(p, config, labels, resume, n_batches):
    """Rank 0: make or reuse the partial file; returns 'done' when the final
    outputs already match, else None."""
    if resume and os.path.exists(p["out"]):
        meta = rt.read_json(p["meta"])
        if meta is not None and meta.get("config") == config:
            if not os.path.exists(p["labels"]):  # lost or moved since: cheap to redo
                with AtomicFiles() as files:
                    np.save(files.open(p["labels"]), labels)
            return "done"
        why = ("it has no settings file %s" % p["meta"] if meta is None else
               "it was made with other settings (%s)"
               % "; ".join(_diff(meta.get("config", {}), config)))
        raise ValueError("features %s exist but %s; delete them or pass resume=False"
                         % (p["out"], why))
    state = rt.read_json(p["state"]) if resume else None
    if state is not None and state.get("format") != FORMAT:
        state = None  # an older layout of the progress file: start afresh
    if state is not None and state.get("config") != config:
        raise ValueError("cannot resume the extraction in %s, it was started with other "
                         "settings (%s); delete %s or pass resume=False" % (
                             p["partial"], "; ".join(_diff(state.get("config", {}), config)),
                             p["state"]))
    if state is not None:
        why = _unusable(p, config, n_batches)
        if why is None:
            _verify(p, config, n_batches)
            return None
        print("extract: %s %s; starting afresh" % (p["partial"], why), file=sys.stderr,
              flush=True)
    _start(p, config, n_batches)
    return None


def _unusable(p, config, n_batches):
    """Why the partial and progress files cannot be resumed, or None."""
    for k in ("partial", "progress"):
        if not os.path.exists(p[k]):
            return "has no %s file %s" % (k, p[k])
    try:
        h = read_npy_header(p["partial"], check_size=False)  # the size is told below
    except (ValueError, OSError) as e:
        return "has an unreadable header (%s)" % e
    if h.shape != (config["n"], config["dim"]) or h.dtype != np.float16:
        return "holds %s %s, not %d x %d float16" % (h.dtype, h.shape, config["n"],
                                                      config["dim"])
    want = h.offset + config["n"] * config["dim"] * 2
    if os.path.getsize(p["partial"]) != want:
        return "is %d bytes, not %d (truncated?)" % (os.path.getsize(p["partial"]), want)
    if os.path.getsize(p["progress"]) != n_batches * MARK.size:
        return "has a progress file of %d bytes, not %d" % (
            os.path.getsize(p["progress"]), n_batches * MARK.size)
    return None


def _verify(p, config, n_batches):
    """Clears the done mark of every batch whose rows fail their CRC (flipped
    bytes, rows that never reached the disk, a forged mark)."""
    out = _Rows(p["partial"], p["progress"], config["batch_size"])
    bad = []
    try:
        for k in np.flatnonzero(batches_done(p["progress"])):
            mark = MARK.unpack(os.pread(out.marks, MARK.size, int(k) * MARK.size))
            if mark[1] != zlib.crc32(out.read_batch(int(k), config["n"])):
                bad.append(int(k))
        out.clear(bad)
    finally:
        out.close()
    if bad:
        print("extract: %d batch%s of %s marked done fail their checksum (batch %s); "
              "redoing them" % (len(bad), "es" if len(bad) > 1 else "", p["partial"],
                                ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")),
              file=sys.stderr, flush=True)


def _start(p, config, n_batches):
    for k in ("state", "partial", "progress", "meta", "out"):
        if os.path.exists(p[k]):
            os.unlink(p[k])
    os.makedirs(os.path.dirname(os.path.abspath(p["out"])), exist_ok=True)
    mm = np.lib.format.open_memmap(p["partial"], mode="w+", dtype=np.float16,
                                   shape=(config["n"], config["dim"]))
    mm.flush()
    del mm
    with open(p["progress"], "wb") as f:
        f.truncate(n_batches * MARK.size)
    rt.atomic_write_text(json.dumps(dict(format=FORMAT, config=config), indent=1), p["state"])


class _Rows:
    """Writes feature rows into the partial .npy and done-marks into the progress
    file with pwrite rather than through a memory map: ranks on several nodes
    may share one file on a network file system, and there a memory map writes
    back whole pages, which can overwrite a neighbour's rows with stale bytes;
    a pwrite sends only its own byte range."""

    def __init__(self, partial, progress, batch_size):
        h = read_npy_header(partial, check_size=False)
        self.offset, self.row_bytes = h.offset, h.shape[1] * h.dtype.itemsize
        self.batch_size = batch_size
        self.rows = os.open(partial, os.O_RDWR)
        self.marks = os.open(progress, os.O_RDWR)

    def write(self, row, values):
        """Writes float16 rows from `row` on; returns their CRC-32."""
        values = np.ascontiguousarray(values, np.float16)
        pwrite_all(self.rows, values, self.offset + row * self.row_bytes)
        return zlib.crc32(values)

    def read_batch(self, k, n):
        start = k * self.batch_size
        size = (min(n, start + self.batch_size) - start) * self.row_bytes
        return os.pread(self.rows, size, self.offset + start * self.row_bytes)

    def mark_done(self, batches):
        """batches: (k, crc) pairs whose rows are written."""
        if not batches:
            return
        os.fsync(self.rows)  # rows reach the disk before their batch is marked done
        for k, crc in batches:
            pwrite_all(self.marks, MARK.pack(DONE, crc), int(k) * MARK.size)
        os.fsync(self.marks)

    def clear(self, batches):
        for k in batches:
            pwrite_all(self.marks, bytes(MARK.size), int(k) * MARK.size)
        if batches:
            os.fsync(self.marks)

    def close(self):
        os.close(self.rows)
        os.close(self.marks)


def _on_all_ranks(d, fn):
    """Runs fn on rank 0 and hands its result (or its error) to every rank, so a
    failure there is raised everywhere instead of hanging the others."""
    out = [None, None]
    if d.main:
        try:
            out[0] = fn()
        except Exception as e:  # re-raised below, on every rank
            out[1] = e
    out = d.broadcast(out)
    if out[1] is not None:
        if d.main:
            raise out[1]
        raise RuntimeError("rank 0 failed: %s" % out[1])
    # a broadcast returns on the sender first: hold rank 0 until every rank has
    # the result, so it cannot run ahead (and exit, closing connections) mid-receive
    d.barrier()
    return out[0]


def extract(dataset, model, out_path, *, batch_size=256, workers=None, amp="auto", flip=False,
            device=None, input_size=None, mean=127.5, std=127.5, channel_order="rgb",
            labels_path=None, resume=True, progress=True, sync_every=10.0, pin_memory=None):
    """Embeds every face of ``dataset`` with ``model`` into ``out_path`` (N x d
    float16 .npy, rows L2-normalised) and its labels into ``labels_path``
    (default: labels.npy beside); returns ``out_path``.

    ``amp``: "auto" (bf16 where the device computes it natively, fp16 on a
    CUDA device without bf16, else fp32), "bf16" / "fp16" autocast or None;
    the precision it resolves to is the one recorded; ``flip``: add the embedding of
    the mirrored face; ``input_size``: resize faces to this square size
    (default: the model's own when it states one, else the images' size);
    ``mean``/``std``: pixel normalisation (x - mean) / std, one number or one
    per channel in the model's channel order, (x - 127.5) / 127.5 as
    insightface; ``channel_order``: "rgb" or "bgr", what the model takes (the
    layout, NCHW or NHWC, comes from an ONNX model's input shape).
    ``workers``: DataLoader processes (default: from the device and the core
    count, see ``runtime.default_workers``); ``pin_memory``: page-locked
    batches for the copy to a GPU (default: on CUDA).
    Under torchrun every rank takes a contiguous share of the batches still to
    do, into the same file; rank 0 finishes it. With ``resume`` a finished
    output with the same settings is kept as is and an unfinished one is
    continued; ``sync_every`` (s) is how often done batches are recorded."""
    t0 = time.time()
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError("batch_size must be an integer >= 1, got %r" % (batch_size,))
    if input_size is not None and (isinstance(input_size, bool) or not isinstance(input_size, int)
                                   or input_size < 1):
        raise ValueError("input_size must be a positive integer (pixels), got %r"
                         % (input_size,))
    if channel_order not in rt.CHANNEL_ORDERS:
        raise ValueError("channel_order must be 'rgb' or 'bgr', got %r" % (channel_order,))
    mean, std = rt.per_channel(mean, "mean"), rt.per_channel(std, "std")
    amp = check_amp(amp)
    ds = rt.open_dataset(dataset)
    labels = rt.dataset_labels(ds)
    n = len(labels)
    if n == 0:
        raise ValueError("the dataset has no faces")
    d, dev = join(device)
    amp = resolve_amp(amp, dev, "extract")
    net = load_model(model, dev)
    first = rt.IndexedFaces(ds)[0][0][None]
    size = input_size or net.input_size
    if size is None:  # the images' own size; faces of other sizes are resized to it
        h, w = first.shape[-2:]
        if h != w:
            raise ValueError("the first face is %d x %d (not square) and the model states no "
                             "input size: pass input_size" % (h, w))
        size = int(h)
    net.check(size)
    prep = dict(size=size, mean=mean, std=std, channel_order=channel_order,
                channels_last=net.channels_last)
    config = dict(n=n, dim=net.dim or _probe(net, first, dev, amp, flip, prep),
                  batch_size=int(batch_size), flip=bool(flip),
                  amp=amp if net.uses_autocast else None, input_size=size,
                  image_size=list(first.shape[-2:]), mean=mean, std=std,
                  channel_order=channel_order, layout=net.layout, model=net.fingerprint,
                  labels=hashlib.sha256(labels.tobytes()).hexdigest())
    if workers is None:
        workers = rt.default_workers(dev)
    pin = dev.type == "cuda" if pin_memory is None else bool(pin_memory)
    return _run(ds, rt.IndexedFaces(ds, size=size), labels, net, config, prep, out_path,
                labels_path, d, dev, workers, pin, resume, progress, sync_every, t0)


def _probe(net, first, dev, amp, flip, prep):
    """The embedding size, from one face; a model that cannot take the input
    fails here, before any file is made."""
    try:
        return int(_embed(net, rt.to_input(first, dev, **prep), dev, amp, flip).shape[1])
    except Exception as e:
        raise ValueError("%s fails on a 1 x 3 x %d x %d float input (%s: %s)" % (
            net.desc, prep["size"], prep["size"], type(e).__name__, e)) from e


class _Timer:
    """Seconds spent per part of the loop, for the summary line."""

    def __init__(self):
        self.t = dict(decode=0.0, model=0.0, write=0.0, sync=0.0)
        self.last = time.perf_counter()

    def lap(self, part):
        now = time.perf_counter()
        self.t[part] += now - self.last
        self.last = now

    def __str__(self):
        return "decode %.1f s, model %.1f s, write %.1f s, sync %.1f s" % tuple(self.t.values())


class _Batch:
    """One batch's embeddings on their way to the host. On CUDA the copy is
    queued behind the forward pass into pinned memory and waited for only
    after the next batch is launched, so the GPU never idles on the host:
    one host sync per batch. On the CPU it is a plain tensor."""

    def __init__(self, k, idx, net, img, dev, config, prep):
        self.k, self.idx = k, idx
        x = rt.to_input(img, dev, **prep)
        e = _embed(net, x, dev, config["amp"], config["flip"])
        norm = e.norm(dim=1, keepdim=True)
        # 0 fine, 1 zero, 2 not finite: sent with the rows, so one copy serves both
        kind = torch.where(norm == 0, 1, torch.where(torch.isfinite(norm), 0, 2))
        out = torch.cat([(e / norm).to(torch.float16).view(torch.int16),
                         kind.to(torch.int16)], 1)
        self.event = None
        if out.device.type == "cuda":
            self.host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
            self.host.copy_(out, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host = out

    def rows(self):
        """(float16 rows, (position, kind) of the first bad row or None)."""
        if self.event is not None:
            self.event.synchronize()
        host = self.host.numpy()
        bad = np.flatnonzero(host[:, -1])
        rows = np.ascontiguousarray(host[:, :-1]).view(np.float16)
        return rows, (int(bad[0]), int(host[bad[0], -1])) if len(bad) else None


def _run(ds, faces, labels, net, config, prep, out_path, labels_path, d, dev, workers, pin,
         resume, progress, sync_every, t0):
    n, bs = config["n"], config["batch_size"]
    n_batches = -(-n // bs)
    p = _paths(out_path, labels_path)
    if _on_all_ranks(d, lambda: _prepare(p, config, labels, resume, n_batches)) == "done":
        if d.main:
            print("extract: %s already holds %d x %d features for these settings -> %s"
                  % (p["out"], n, config["dim"], p["out"]), flush=True)
        return p["out"]

    todo = np.flatnonzero(~batches_done(p["progress"]))
    # every rank must split the same list: none may mark a batch done before all have read
    d.barrier()
    mine = np.array_split(todo, d.world)[d.rank]  # a contiguous share of what is left
    was_done = n_batches - len(todo)
    out = _Rows(p["partial"], p["progress"], bs)
    loader = DataLoader(faces, batch_sampler=[range(k * bs, min(n, (k + 1) * bs)) for k in mine],
                        num_workers=workers if len(mine) > 1 else 0, pin_memory=pin,
                        collate_fn=rt.collate)
    bar = progress_bar(progress and d.main, total=len(mine), desc="extract", unit="batch")
    pending, last_sync, timer = [], time.time(), _Timer()

    def sync():
        out.mark_done(pending)
        pending.clear()

    def store(batch):
        rows, bad = batch.rows()
        timer.lap("model")
        if bad is not None:
            i = int(batch.idx[bad[0]])
            raise ValueError("the model gave a %s embedding for face %d (%s); with amp='fp16' "
                             "try amp='bf16' or None" % (
                                 "zero" if bad[1] == 1 else "non-finite", i, _where(ds, i)))
        pending.append((batch.k, out.write(int(batch.idx[0]), rows)))
        timer.lap("write")
        if bar is not None:
            bar.update()

    try:
        last, batches = None, zip(mine, loader)
        while True:
            try:
                k, (img, _, idx) = next(batches)
            except StopIteration:
                break
            except BaseException:  # a failed read: keep the batch already embedded
                if last is not None:
                    store(last)
                    sync()
                raise
            timer.lap("decode")
            batch = _Batch(k, idx, net, img, dev, config, prep)
            timer.lap("model")
            if last is not None:  # the previous batch, while this one runs
                store(last)
            last = batch
            if time.time() - last_sync >= sync_every:
                sync()
                last_sync = time.time()
                timer.lap("sync")
        if last is not None:
            store(last)
        sync()
        timer.lap("sync")
    finally:
        out.close()
    if bar is not None:
        bar.close()
    d.barrier()

    def finish():
        left = int((~batches_done(p["progress"])).sum())
        if left:
            raise RuntimeError("%d of %d batches of %s are not done after every rank finished"
                               % (left, n_batches, p["partial"]))
        with AtomicFiles() as files:
            np.save(files.open(p["labels"]), labels)
            files.open(p["meta"], "w").write(json.dumps(
                dict(format=FORMAT, config=config, labels=p["labels"]), indent=1))
        os.replace(p["partial"], p["out"])  # last: the features appear only when complete
        fsync_dir(os.path.dirname(os.path.abspath(p["out"])))
        for k in ("progress", "state"):
            os.unlink(p[k])

    _on_all_ranks(d, finish)
    if d.main:
        print("extract: %d faces x %d dims float16 with %s (%s%s, %d rank%s)%s; %.1f s (%s) -> %s"
              % (n, config["dim"], net.desc, describe(config["amp"]),
                 ", flip-sum" if config["flip"] else "", d.world, "s" if d.world > 1 else "",
                 "; resumed with %d of %d batches done" % (was_done, n_batches)
                 if was_done else "", time.time() - t0, timer, p["out"]), flush=True)
    return p["out"]
