"""NMS passes over features in memory: the Runner every search drives.

A Runner is called with thresholds (T ascending, or C x T: one row per
identity) and returns ``bits`` (int64 per rank position; bit j set = kept
at lane j) and the kept ``counts`` shaped like the thresholds. It also has
``order`` (the rank order, final after the first pass), ``passes`` and
``close()``. facenms.scale.blocks.BlockRunner is the same for features
read block by block and identities split over processes.
"""
import sys

import torch

from ..io.progress import progress_bar
from . import ops
from .inputs import raise_bad_row


class Runner:
    """Runs NMS passes, in chunks of identities when a progress bar is shown."""

    def __init__(self, x, order, offsets, sizes, *, min_keep, progress=False, fuse=None,
                 norms=None):
        # fuse: "sparsity" or "centrality" when `order` is not ranked yet; the
        # first pass ranks it (rank_nms) and self.order becomes the rank order.
        # norms: float64 norms following `order` (from prepare), or None
        self.x, self.order, self.offsets, self.min_keep = x, order, offsets, min_keep
        self.norms = norms
        self.fuse = fuse
        self.passes = 0
        self.bar = None
        self.chunks = [(0, len(sizes))]
        if progress and len(sizes) > 1 and sys.stderr.isatty():
            cost = (sizes.double() ** 2).cpu().cumsum(0)
            total = float(cost[-1])
            cuts = torch.searchsorted(cost, torch.linspace(0, total, 51, dtype=torch.float64)[1:-1])
            bounds = sorted(set([0, len(sizes)] + [int(c) + 1 for c in cuts]))
            self.chunks = [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if a < b]
            self.bar = progress_bar(True, total=int(offsets[-1]), unit="face", desc="facenms",
                                    leave=False)
        self.bounds_host = offsets.cpu()

    def __call__(self, thresholds):
        """bits (per rank position) and counts (shaped like thresholds)."""
        thresholds = thresholds.to(self.x.device, torch.float64).contiguous()
        self.passes += 1
        if self.bar is not None:
            self.bar.reset()
            self.bar.set_description("facenms pass %d" % self.passes)
        ranked, bits, counts, bad = [], [], [], False
        for c0, c1 in self.chunks:
            a, b = int(self.bounds_host[c0]), int(self.bounds_host[c1])
            thr = thresholds[c0:c1] if thresholds.dim() == 2 else thresholds
            args = (self.x, self.order[a:b], self.offsets[c0:c1 + 1] - a, thr, self.min_keep)
            if self.fuse:
                rk, bi, co, first_bad = ops.rank_nms(*args, centrality=self.fuse == "centrality")
                ranked.append(rk)
                bad = bad or int(first_bad) >= 0
            elif self.norms is not None:
                bi, co = ops.nms_with_norms(*args, self.norms[a:b])
            else:
                bi, co = ops.nms(*args)
            bits.append(bi)
            counts.append(co)
            if self.bar is not None:
                self.bar.update(b - a)
        if bad:
            raise_bad_row(self.x)
        if self.fuse:
            self.order, self.fuse = concat(ranked), None
        counts = concat(counts) if thresholds.dim() == 2 else sum(counts[1:], counts[0])
        return concat(bits), counts

    def close(self):
        if self.bar is not None:
            self.bar.close()


def concat(ts):
    """torch.cat without a copy for one tensor."""
    return ts[0] if len(ts) == 1 else torch.cat(ts)
