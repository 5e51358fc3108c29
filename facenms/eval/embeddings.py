"""WebFace-like synthetic embeddings for the demo, tests and benchmarks.

Identity sizes follow a log-normal law fitted to WebFace42M's shape: mean
~21 faces and sum(n_c^2)/N ~ 160 (a long tail of identities with thousands
of faces, which dominates the work). A face is its identity's centre plus
shared nuisance factors (pose, light: a few directions common to all
identities) plus noise; a third of the faces are near-duplicates of an
earlier face of their identity (bursts, re-uploads, video frames).
"""
from typing import Tuple

import numpy as np


def identity_sizes(n_faces, rng, mean=21.0, tail=1.42, max_size=5000):
    """Identity sizes (>= 2) that add up to n_faces exactly."""
    mu = np.log(mean) - tail ** 2 / 2
    sizes = []
    total = 0
    while total < n_faces:
        s = np.clip(np.rint(rng.lognormal(mu, tail, 4096)), 2, max_size).astype(np.int64)
        sizes.append(s)
        total += int(s.sum())
    sizes = np.concatenate(sizes)
    cut = int(np.searchsorted(np.cumsum(sizes), n_faces))
    sizes = sizes[:cut + 1]
    sizes[-1] -= int(sizes.sum()) - n_faces
    return sizes[sizes > 0]


def webface_like(n_faces: int = 200_000, dim: int = 512, seed: int = 0, *, dtype=np.float32,
                 duplicates: float = 0.33, noise: float = 0.8, nuisance: int = 8,
                 chunk: int = 1 << 16) -> Tuple[np.ndarray, np.ndarray]:
    """(features (N, dim) unit rows in `dtype`, labels (N,) int64), faces of an identity adjacent."""
    rng = np.random.default_rng(seed)
    sizes = identity_sizes(n_faces, rng)
    labels = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    basis = rng.standard_normal((nuisance, dim)).astype(np.float32) / np.sqrt(dim)
    feats = np.empty((n_faces, dim), dtype=dtype)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    # identities are generated a chunk of faces at a time to bound memory
    c = 0
    while c < len(sizes):
        c_end = int(np.searchsorted(starts, starts[c] + chunk, side="right"))
        c_end = max(c_end, c + 1)
        a, b = int(starts[c]), int(starts[c_end - 1] + sizes[c_end - 1])
        lab = labels[a:b] - c
        centres = rng.standard_normal((c_end - c, dim)).astype(np.float32) / np.sqrt(dim)
        x = centres[lab]
        x += rng.standard_normal((b - a, nuisance)).astype(np.float32) * 0.35 @ basis
        x += rng.standard_normal((b - a, dim)).astype(np.float32) * (noise / np.sqrt(dim))
        # near-duplicates: copy an earlier face of the same identity, add a little noise
        dup = np.flatnonzero(rng.random(b - a) < duplicates)
        first = starts[c:c_end][lab[dup]] - a  # where each duplicate's identity starts
        dup, first = dup[dup > first], first[dup > first]
        src = first + (rng.random(len(dup)) * (dup - first)).astype(np.int64)
        x[dup] = x[src] + rng.standard_normal((len(dup), dim)).astype(np.float32) * (
            0.15 / np.sqrt(dim))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        feats[a:b] = x.astype(dtype)
        c = c_end
    return feats, labels
