"""Run by test_streaming.py under torchrun: selections split over the ranks.

    python -m torch.distributed.run --nproc_per_node=2 tests/dist_select.py F.npy L.npy OUT.npz

writes OUT.npz (from the API) and OUT.npz.cli.npy (from `facenms select`).
"""
import sys

import numpy as np

import facenms
from dist_results import save_agreed

features, labels, out = sys.argv[1:4]
results = {
    "threshold": facenms.select(features, labels, threshold=0.7, block_size=4000,
                                distributed=True),
    "ratio": facenms.select(features, labels, ratio=0.6, block_size=30000, distributed=True),
}
x, lab = np.load(features, mmap_mode="r"), np.load(labels)
part = np.flatnonzero(np.isin(lab, np.unique(lab)[:2000]))
results["per_identity"] = part[facenms.select(x[part], lab[part], ratio=0.5, per_identity=True,
                                              min_per_identity=2, distributed=True)]
keep, info = facenms.select(np.load(features), np.load(labels), ratio=0.6, return_info=True,
                            distributed=True)  # in-memory arrays split over ranks too
results["ratio_in_memory"] = keep
results["ratio_kept_per_identity"] = info.kept_per_identity

from facenms import cli  # noqa: E402

# the CLI under torchrun: distributed because WORLD_SIZE > 1; rank 0 writes
cli.main(["select", "--features", features, "--labels", labels, "--threshold", "0.7",
          "--block-size", "50000", "--out", out + ".cli.npy"])

save_agreed(results, out)
