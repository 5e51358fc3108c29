"""Selection split over processes (torchrun): who does which identities, and
the few reductions that make every process take the same decisions.

    torchrun --nproc_per_node=8 -m facenms select --features F.npy ... --distributed

Each rank runs NMS on a contiguous range of identities (in ascending label
order) with about the same sum(n_c^2), the work of the kernels. The ratio
search sums the per-threshold kept counts over ranks after every pass, so all
ranks walk the same thresholds; the kept faces are summed into one mask at the
end. gloo reduces CPU tensors, nccl CUDA tensors (moved there for the call).
"""
import os

import numpy as np
import torch

__all__ = ["init", "active", "Comm", "split_identities"]


def active():
    """True inside an initialised process group of more than one process."""
    import torch.distributed as dist
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def init(backend=None):
    """Join torchrun's process group (from its environment) unless already in one.

    backend: "gloo" or "nccl"; default nccl when CUDA is available, else gloo.
    Returns (rank, world_size).
    """
    import torch.distributed as dist
    if not dist.is_available():
        raise RuntimeError("facenms: this torch build has no torch.distributed")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
               if k not in os.environ]
    if missing:
        raise RuntimeError("facenms: distributed selection needs torch.distributed initialised "
                           "or torchrun's environment (missing %s)" % ", ".join(missing))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


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
    """rank / world and the reductions selection needs; a no-op for one process."""

    def __init__(self, group=None):
        import torch.distributed as dist
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
