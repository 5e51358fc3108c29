"""What the torchrun worker scripts share: every rank must hold the same results; rank 0
saves them."""
import numpy as np
import torch.distributed as dist


def save_agreed(results, out):
    """Check that every rank computed the same `results` ({name: array}), save them on rank
    0 as OUT.npz, and leave the process group."""
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, {k: np.asarray(v).tolist() for k, v in results.items()})
    assert all(e == everyone[0] for e in everyone), "ranks disagree"
    if dist.get_rank() == 0:
        np.savez(out, **results)
    dist.destroy_process_group()
