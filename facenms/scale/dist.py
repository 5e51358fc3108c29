"""Work split over processes (torchrun): the one place facenms joins a process
group, decides who is rank 0, and reduces.

    torchrun --nproc_per_node=8 -m facenms select --features F.npy ... --distributed

Selection: each rank runs NMS on a contiguous range of identities (in
ascending label order) with about the same sum(n_c^2), the work of the
kernels. The ratio search sums the per-threshold kept counts over ranks after
every pass, so all ranks walk the same thresholds; the kept faces are summed
into one mask at the end. gloo reduces CPU tensors, nccl CUDA tensors (moved
there for the call). Proxy training and extraction join the same group.
"""
import atexit
import os

import numpy as np
import torch

__all__ = ["init", "join", "active", "is_main", "Comm", "split_identities"]


def _dist():
    import torch.distributed as dist
    return dist


def active():
    """True inside an initialised process group of more than one process."""
    dist = _dist()
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main():
    """Rank 0 of the group, or a process outside any group: the one that writes and prints."""
    dist = _dist()
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _leave():
    dist = _dist()
    if dist.is_initialized():
        try:
            dist.barrier()  # leave together: a rank closing early can abort another
        except Exception:  # another rank is already gone; nothing left to wait for
            pass
        dist.destroy_process_group()


def _start(backend):
    # A group made here lives until the process exits, so that several stages
    # (train, then extract, then select) run in one torchrun process:
    # destroying a group and making another on the same rendezvous port hangs.
    _dist().init_process_group(backend)
    atexit.register(_leave)


def init(backend=None):
    """Join torchrun's process group (from its environment) unless already in one.

    backend: "gloo" or "nccl"; default nccl when CUDA is available, else gloo.
    Returns (rank, world_size).
    """
    dist = _dist()
    if not dist.is_available():
        raise ValueError("distributed selection needs torch.distributed, which this torch "
                         "build lacks")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
               if k not in os.environ]
    if missing:
        raise ValueError("distributed=True needs a torch.distributed process group, or "
                         "torchrun's environment to make one (missing %s)" % ", ".join(missing))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    _start(backend)
    return dist.get_rank(), dist.get_world_size()


def comm_for(distributed):
    """The Comm of a selection: all of torch.distributed's processes when asked for or
    when it is initialised (distributed=None), one process when distributed=False."""
    if distributed is False or (distributed is None and not active()):
        return Comm.single()
    init()
    return Comm()


def join(device=None):
    """(Comm, compute device) for a stage that trains or extracts.

    Joins torchrun's group when WORLD_SIZE > 1 (nccl with CUDA, gloo on the
    CPU); a plain process is rank 0 of 1. Default device: this rank's GPU, or
    the CPU.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = ("cuda:%d" % (local_rank % torch.cuda.device_count())
                  if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _dist().is_initialized():
        _start("nccl" if device.type == "cuda" else "gloo")
    return (Comm() if _dist().is_initialized() else Comm.single()), device


def split_identities(sizes, world):
    """Boundaries (world + 1 ints) of contiguous identity ranges of balanced sum(n_c^2).

    A single identity is never split, so one huge identity can leave a rank
    with more than its share; ranges may be empty.
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    cost = np.cumsum(sizes * sizes)
    total = cost[-1] if len(cost) else 0.0
    targets = total * np.arange(1, world) / world
    cuts = np.searchsorted(cost, targets, side="right")
    # the identity that crosses a target goes to the side it leaves less unbalanced
    for k, c in enumerate(cuts):
        if c < len(cost):
            before = cost[c - 1] if c > 0 else 0.0
            if cost[c] - targets[k] < targets[k] - before:
                cuts[k] = c + 1
    bounds = np.concatenate([[0], cuts, [len(sizes)]]).astype(np.int64)
    return np.maximum.accumulate(bounds)


class Comm:
    """rank / world, a barrier and the reductions facenms needs; a no-op for one process."""

    def __init__(self, group=None):
        dist = _dist()
        self.dist = dist
        self.group = group
        self.world = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        backend = dist.get_backend(group)
        self.device = torch.device("cuda", torch.cuda.current_device()) \
            if backend == "nccl" else torch.device("cpu")

    @classmethod
    def single(cls):
        c = cls.__new__(cls)
        c.dist, c.group, c.world, c.rank, c.device = None, None, 1, 0, torch.device("cpu")
        return c

    @property
    def main(self):
        return self.rank == 0

    def barrier(self):
        if self.world > 1:
            self.dist.barrier(group=self.group)

    def _reduce(self, t, op):
        if self.world == 1:
            return t
        buf = t.to(self.device).contiguous()
        self.dist.all_reduce(buf, op=op, group=self.group)
        return buf.to(t.device)

    def sum(self, t):
        """Elementwise sum over ranks (a new tensor on t's device)."""
        return self._reduce(t, None if self.world == 1 else self.dist.ReduceOp.SUM)

    def min(self, t):
        return self._reduce(t, None if self.world == 1 else self.dist.ReduceOp.MIN)

    def on_main(self, fn):
        """Run fn on rank 0 and hand its result (or its error) to every rank, so that a
        failure there is raised everywhere instead of hanging the others."""
        out = [None, None]
        if self.main:
            try:
                out[0] = fn()
            except Exception as e:  # re-raised below, on every rank
                out[1] = e
        out = self.broadcast(out)
        if out[1] is not None:
            if self.main:
                raise out[1]
            raise RuntimeError("rank 0 failed: %s" % out[1])
        # a broadcast returns on the sender first: hold rank 0 until every rank has the
        # result, so it cannot run ahead (and exit, closing connections) mid-receive
        self.barrier()
        return out[0]

    def broadcast(self, obj):
        """Rank 0's Python object, on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        self.dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]
