"""Screens of the nearest-centre search: cheap products that rule rows out.

label_issues needs, for each candidate row y, b = max over other identities'
centres m of <y, m>, but only where b exceeds the row's `need`. A screen
computes every <y, m> in a faster number format with a proven error bound
err; a row whose screened maximum is at most need - err cannot be flagged,
and for the others only the centres within 2 err of the screened maximum can
be the nearest one (facenms.core.nearest computes those exactly).

- int8 on CPUs with AVX2 or more (``torch._int_mm``, int32 sums: 2x the
  float32 rate with AVX2, 4x with VNNI): each row is scaled to +-INT8_MAX
  and rounded, the centres with one scale t for all. With y = s q + e and
  m = t r + f (unit rows, |e|, |f| their rounding residuals' norms),
  Cauchy-Schwarz gives

      |<y, m> - s t <q, r>| <= |e| |m| + |s q| |f| <= |e| + (1 + |e|) max |f|,

  and max over m of <q, r> is an exact integer.
- bfloat16 where the device computes it natively (CUDA from Ampere on, CPUs
  with AMX or AVX512_BF16): within BF16_ERROR of float32 for unit rows.

Elsewhere there is no screen: emulated bfloat16 is ten times slower than
float32 itself.
"""
import math

import torch

from .hardware import fast_int8, native_bf16

# |bfloat16 - float32 cosine| of unit vectors: 2 roundings of 2**-8 relative per product,
# summed over products whose magnitudes sum to <= 1, the result rounded (2**-9), float32
# accumulation; 2**-6 covers that with room
BF16_ERROR = 2.0 ** -6
# float32 rounding in the int8 residuals and the rescaled product, with room
INT8_SLACK = 2.0 ** -16
# +-63, not +-127: without VNNI (AVX2, AVX-512 before Cascade Lake) oneDNN sums pairs of
# u8 x s8 products in saturating int16 (vpmaddubsw); |s8| <= 63 keeps a pair below 2**15
INT8_MAX = 63
INT8_MIN_DIM = 16  # torch._int_mm on the CPU mis-sums rows of one element; short rows gain little


def int8_rows(v, common=False, block_elements=1 << 21):
    """(q int8, scale, residual norms (n,)) with v ~ scale * q: a scale per row
    (n,), or with `common` one for all rows (0-d). Rows are taken a block of
    about block_elements values at a time: the float temporaries stay small
    next to the int8 result (a million centres are not copied in float32)."""
    step = max(1, block_elements // max(1, v.shape[1]))
    amax = v.new_zeros(v.shape[0])
    for lo in range(0, v.shape[0], step):  # abs().amax: 10x faster than vector_norm(ord=inf)
        amax[lo:lo + step] = v[lo:lo + step].abs().amax(dim=1)
    if common:
        amax = amax.max() if amax.numel() else amax.new_zeros(())
    scale = amax / INT8_MAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.empty(v.shape, dtype=torch.int8, device=v.device)
    residual = torch.empty(v.shape[0], dtype=v.dtype, device=v.device)
    for lo in range(0, v.shape[0], step):
        per = scale if common else scale[lo:lo + step, None]
        r = v[lo:lo + step] * (1 / per)
        rq = torch.round(r).clamp_(-INT8_MAX, INT8_MAX)
        q[lo:lo + step] = rq
        # |v - scale q| = scale |r - q|, up to float32 rounding (in INT8_SLACK)
        residual[lo:lo + step] = torch.linalg.vector_norm(r.sub_(rq), dim=1) * per.reshape(-1)
    return q, scale, residual


def screen_kind(device, d):
    """'int8', 'bf16' or None: the screen that pays on `device` for rows of d."""
    if fast_int8(device) and d >= INT8_MIN_DIM:
        return "int8"
    return "bf16" if native_bf16(device) else None


def screen(y, own, centres, need, step, kind):
    """(rows, cols): each row of y whose largest cosine to a centre other than its
    own (`own`: indices into centres) may exceed `need`, paired with every centre
    within twice the screen's error of its screened largest (so with the true
    nearest one). Rows of `step` at a time."""
    if kind == "int8":  # one scale for all centres: the row's maximum stays an integer
        qc, t, f = int8_rows(centres, common=True)
        qc, t, worst = qc.T, float(t), float(f.max())
    else:
        low = centres.to(torch.bfloat16).T
    rows, cols = [], []
    for lo in range(0, y.shape[0], step):
        block, mine = y[lo:lo + step], own[lo:lo + step, None]
        if kind == "int8":
            q, s, e = int8_rows(block)
            sims = torch._int_mm(q, qc).scatter_(1, mine, torch.iinfo(torch.int32).min)
            unit = s.double() * t  # the cosine of one integer step, per row
            err = (e + (1 + e) * worst + INT8_SLACK).double()
        else:
            sims = torch.mm(block.to(torch.bfloat16), low).scatter_(1, mine, -math.inf)
            unit = torch.ones(block.shape[0], dtype=torch.float64, device=y.device)
            err = torch.full_like(unit, BF16_ERROR)
        top = sims.amax(dim=1).double() * unit
        hit = torch.nonzero(top > need[lo:lo + step] - err).reshape(-1)
        floor = (top[hit] - 2 * err[hit]) / unit[hit]
        i, c = torch.nonzero(sims.index_select(0, hit) >= floor[:, None], as_tuple=True)
        rows.append(lo + hit[i])
        cols.append(c)
    if not rows:
        return (torch.zeros(0, dtype=torch.int64, device=y.device),) * 2
    return torch.cat(rows), torch.cat(cols)


__all__ = ["BF16_ERROR", "int8_rows", "screen_kind", "screen"]
