"""Run by test_cleaning.py under torchrun: label issues split over the ranks.

    python -m torch.distributed.run --nproc_per_node=2 tests/dist_cleaning.py F.npy L.npy OUT.npz
"""
import sys

import numpy as np

import facenms
from dist_results import save_agreed

features, labels, out = sys.argv[1:4]
streamed, info = facenms.label_issues(features, labels, block_size=500, distributed=True,
                                      return_info=True)
results = {
    "streamed": streamed, "other": info.other_label, "issue_score": info.issue_score,
    "in_memory": facenms.label_issues(np.load(features), np.load(labels), distributed=True),
    "select": facenms.select(features, labels, ratio=0.6, clean=True, distributed=True),
}

save_agreed(results, out)
