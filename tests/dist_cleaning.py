"""Run by test_cleaning.py under torchrun: label issues split over the ranks.

    python -m torch.distributed.run --nproc_per_node=2 tests/dist_cleaning.py F.npy L.npy OUT.npz
"""
import sys

import numpy as np

import facenms

features, labels, out = sys.argv[1:4]
streamed, info = facenms.label_issues(features, labels, block_size=500, distributed=True,
                                      return_info=True)
results = {
    "streamed": streamed, "other": info.other_label, "issue_score": info.issue_score,
    "in_memory": facenms.label_issues(np.load(features), np.load(labels), distributed=True),
    "select": facenms.select(features, labels, ratio=0.6, clean=True, distributed=True),
}

import torch.distributed as dist  # noqa: E402

everyone = [None] * dist.get_world_size()
dist.all_gather_object(everyone, {k: v.tolist() for k, v in results.items()})
assert all(e == everyone[0] for e in everyone), "ranks disagree"
if dist.get_rank() == 0:
    np.savez(out, **results)
dist.destroy_process_group()
