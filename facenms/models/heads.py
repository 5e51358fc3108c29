"""Margin softmax heads: cosine logits against L2-normalised class weights,
with an additive angular (ArcFace) or additive cosine (CosFace) margin on the
target class, times a scale ``s``. They return logits for cross-entropy; the
margin applies only when labels are given (training).

Logits are computed in float32 even under autocast: with s=64 a bf16 cosine
(~3 significant digits) would quantise logits by ~0.25.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


class _MarginHead(nn.Module):
    def __init__(self, embedding_size, num_classes, scale=64.0, margin=0.5):
        super().__init__()
        if num_classes < 2:
            raise ValueError("%s: needs at least 2 classes, got %d"
                             % (type(self).__name__, num_classes))
        self.scale = float(scale)
        self.margin = float(margin)
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.normal_(self.weight, std=0.01)

    def cosine(self, emb):
        with torch.autocast(emb.device.type, enabled=False):
            return F.linear(F.normalize(emb.float()), F.normalize(self.weight.float()))

    def forward(self, emb, labels=None):
        cos = self.cosine(emb).clamp(-1.0, 1.0)
        if labels is None:
            return cos * self.scale
        idx = labels.view(-1, 1)
        target = cos.gather(1, idx)
        return cos.scatter(1, idx, self._target_logit(target)) * self.scale

    def extra_repr(self):
        return "classes=%d, dim=%d, s=%g, m=%g" % (
            self.weight.shape[0], self.weight.shape[1], self.scale, self.margin)


class ArcFace(_MarginHead):
    """cos(theta + m) on the target class."""

    def __init__(self, embedding_size, num_classes, scale=64.0, margin=0.5):
        super().__init__(embedding_size, num_classes, scale, margin)
        self._cos_m, self._sin_m = math.cos(margin), math.sin(margin)
        # past theta = pi - m, cos(theta + m) would increase again with theta;
        # there the logit continues linearly (as insightface does) to stay monotone
        self._th = math.cos(math.pi - margin)
        self._mm = math.sin(math.pi - margin) * margin

    def _target_logit(self, cos):
        sin = torch.sqrt((1.0 - cos * cos).clamp_min(0.0))
        phi = cos * self._cos_m - sin * self._sin_m
        return torch.where(cos > self._th, phi, cos - self._mm)


class CosFace(_MarginHead):
    """cos(theta) - m on the target class."""

    def __init__(self, embedding_size, num_classes, scale=64.0, margin=0.35):
        super().__init__(embedding_size, num_classes, scale, margin)

    def _target_logit(self, cos):
        return cos - self.margin
