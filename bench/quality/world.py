"""A simulated face world with the redundancy of a scraped training set.

An identity is a latent point z_c. A photo of it is rendered from
[z_c + small per-photo drift (age, make-up), nuisance factors shared by all
identities (pose, light, expression)] through a fixed random two-layer network
into an "image" vector, plus pixel noise. What makes it look like WebFace:

- long-tailed identity sizes (log-normal, a few identities with hundreds of photos);
- bursts: photos come in sessions of near-duplicates (same pose/light, tiny
  changes), the redundancy that core-set selection is meant to remove;
- low-quality photos (heavy pixel noise, like blur or low resolution);
- a few percent mislabeled photos (another identity's face under this label);
- optionally, open-set outliers: photos of people who are not in the set at all.

Evaluation identities are disjoint from training identities and their photos
are clean single shots (no bursts, no label noise), like LFW/IJB pairs. The
world is drawn from one seed, so every method sees the same data.
"""
from dataclasses import dataclass

import numpy as np


@dataclass
class WorldConfig:
    train_identities: int = 1000
    eval_identities: int = 500
    mean_size: float = 24.0  # mean photos per training identity
    size_tail: float = 0.9  # log-normal sigma of identity sizes
    max_size: int = 300
    mean_burst: float = 2.2  # photos per session (geometric): ~55% of photos are repeats
    latent_dim: int = 24  # identity latent
    nuisance_dim: int = 8  # pose (3), light (3), expression (2)
    image_dim: int = 192
    hidden: int = 256  # width of the render network
    drift: float = 0.35  # per-photo identity drift
    nuisance_scale: float = 1.6
    burst_jitter: float = 0.06  # how far a repeat moves from its session's base
    pixel_noise: float = 0.20
    low_quality: float = 0.08  # fraction of photos with heavy noise
    low_quality_noise: float = 0.45
    mislabeled: float = 0.03
    outliers: float = 0.0  # fraction of photos of people outside the set (true label -1)
    eval_faces: int = 8  # photos per evaluation identity
    eval_negatives: int = 200_000

    def scaled(self, factor):
        """A smaller world for quick checks."""
        c = WorldConfig(**self.__dict__)
        c.train_identities = max(20, int(self.train_identities * factor))
        c.eval_identities = max(20, int(self.eval_identities * factor))
        c.eval_negatives = max(2000, int(self.eval_negatives * factor))
        return c


@dataclass
class World:
    images: np.ndarray  # (N, image_dim) float32 training photos
    labels: np.ndarray  # (N,) int64 training labels (with the label noise)
    true_labels: np.ndarray  # (N,) whose face it really is
    burst: np.ndarray  # (N,) session id (repeats share one)
    low_quality: np.ndarray  # (N,) bool
    eval_images: np.ndarray  # (M, image_dim)
    pairs: np.ndarray  # (P, 2) indices into eval_images
    issame: np.ndarray  # (P,) bool

    @property
    def num_classes(self):
        return int(self.labels.max()) + 1

    def describe(self):
        sizes = np.bincount(self.labels)
        n_b = len(np.unique(self.burst))
        return ("%d training photos of %d identities (mean %.1f, max %d), %d sessions "
                "(%.0f%% of photos repeat a session), %.1f%% low quality, %.1f%% mislabeled "
                "(%.1f%% of people outside the set); "
                "eval: %d photos, %d genuine + %d impostor pairs" % (
                    len(self.labels), len(sizes), sizes.mean(), sizes.max(), n_b,
                    100 * (1 - n_b / len(self.labels)), 100 * self.low_quality.mean(),
                    100 * np.mean(self.labels != self.true_labels),
                    100 * np.mean(self.true_labels < 0), len(self.eval_images),
                    self.issame.sum(), (~self.issame).sum()))


class _Renderer:
    """The fixed random nonlinear map from latent to "image"."""

    def __init__(self, cfg, rng):
        k = cfg.latent_dim + cfg.nuisance_dim
        self.w1 = rng.standard_normal((k, cfg.hidden)) / np.sqrt(k) * 1.5
        self.b1 = rng.standard_normal(cfg.hidden) * 0.3
        self.w2 = rng.standard_normal((cfg.hidden, cfg.image_dim)) / np.sqrt(cfg.hidden) * 1.5

    def __call__(self, z, u):
        h = np.tanh(np.concatenate([z, u], axis=1) @ self.w1 + self.b1)
        return np.tanh(h @ self.w2)


def _sizes(n, cfg, rng):
    mu = np.log(cfg.mean_size) - cfg.size_tail ** 2 / 2
    return np.clip(np.rint(rng.lognormal(mu, cfg.size_tail, n)), 2, cfg.max_size).astype(np.int64)


def make_world(cfg=None, seed=0):
    cfg = cfg or WorldConfig()
    rng = np.random.default_rng(seed)
    render = _Renderer(cfg, rng)
    n_id = cfg.train_identities + cfg.eval_identities
    z = rng.standard_normal((n_id, cfg.latent_dim))
    z /= np.linalg.norm(z, axis=1, keepdims=True) / np.sqrt(cfg.latent_dim)

    # training photos: sessions of near-duplicates
    sizes = _sizes(cfg.train_identities, cfg, rng)
    labels = np.repeat(np.arange(cfg.train_identities), sizes)
    n = len(labels)
    new_session = rng.random(n) < 1.0 / cfg.mean_burst
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    new_session[starts] = True  # every identity starts a session
    burst = np.cumsum(new_session) - 1
    n_b = burst[-1] + 1
    base_u = rng.standard_normal((n_b, cfg.nuisance_dim)) * cfg.nuisance_scale
    base_d = rng.standard_normal((n_b, cfg.latent_dim)) * cfg.drift
    u = base_u[burst] + rng.standard_normal((n, cfg.nuisance_dim)) * cfg.burst_jitter
    d = base_d[burst] + rng.standard_normal((n, cfg.latent_dim)) * cfg.burst_jitter
    # label noise: the photo shows someone else (another training identity)
    true = labels.copy()
    wrong = rng.random(n) < cfg.mislabeled
    true[wrong] = (labels[wrong] + rng.integers(1, cfg.train_identities, wrong.sum())) \
        % cfg.train_identities
    latent = z[true]
    if cfg.outliers > 0:  # drawn only then, so that worlds without them stay as they were
        stranger = (rng.random(n) < cfg.outliers) & ~wrong
        fresh = rng.standard_normal((int(stranger.sum()), cfg.latent_dim))
        latent[stranger] = fresh / np.linalg.norm(fresh, axis=1, keepdims=True) * np.sqrt(
            cfg.latent_dim)
        true[stranger] = -1
    x = render(latent + d, u)
    low = rng.random(n) < cfg.low_quality
    noise = np.where(low, cfg.low_quality_noise, cfg.pixel_noise)[:, None]
    x += rng.standard_normal(x.shape) * noise

    # evaluation: clean single shots of unseen identities
    ev_id = np.repeat(np.arange(cfg.train_identities, n_id), cfg.eval_faces)
    m = len(ev_id)
    ue = rng.standard_normal((m, cfg.nuisance_dim)) * cfg.nuisance_scale
    de = rng.standard_normal((m, cfg.latent_dim)) * cfg.drift
    xe = render(z[ev_id] + de, ue) + rng.standard_normal((m, cfg.image_dim)) * cfg.pixel_noise
    pairs, issame = _pairs(ev_id, cfg.eval_negatives, rng)
    return World(images=x.astype(np.float32), labels=labels.astype(np.int64),
                 true_labels=true.astype(np.int64), burst=burst, low_quality=low,
                 eval_images=xe.astype(np.float32), pairs=pairs, issame=issame)


def _pairs(ids, n_neg, rng):
    """All genuine pairs and n_neg random impostor pairs, shuffled (folds mix both)."""
    pos = []
    for c in np.unique(ids):
        r = np.flatnonzero(ids == c)
        a, b = np.triu_indices(len(r), 1)
        pos.append(np.stack([r[a], r[b]], 1))
    pos = np.concatenate(pos)
    a = rng.integers(0, len(ids), 2 * n_neg)
    b = rng.integers(0, len(ids), 2 * n_neg)
    ok = ids[a] != ids[b]
    neg = np.stack([a[ok], b[ok]], 1)[:n_neg]
    pairs = np.concatenate([pos, neg])
    issame = np.concatenate([np.ones(len(pos), bool), np.zeros(len(neg), bool)])
    perm = rng.permutation(len(pairs))
    return pairs[perm], issame[perm]
