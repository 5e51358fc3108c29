"""Screens of the nearest-centre search: cheap products that rule rows out.

label_issues needs, for each candidate row y, b = max over other identities'
centres m of <y, m>, but only where b exceeds the row's `need`. A screen
computes every <y, m> in a faster number format with a proven error bound
err (block_products); a row whose screened maximum is at most need - err
cannot be flagged, and for the others only the centres within 2 err of the
screened maximum can be the nearest one (facenms.core.nearest takes those
exactly).

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
float32 itself. The products are then taken in the rows' own float type, with
the bound product_error.
"""
import torch

from .hardware import fast_int8, native_bf16

# |bfloat16 - float32 cosine| of unit vectors: 2 roundings of 2**-8 relative per product,
# summed over products whose magnitudes sum to <= 1, the result rounded (2**-9), float32
# accumulation; 2**-6 covers that with room
BF16_ERROR = 2.0 ** -6
# float32 rounding in the int8 residuals and the rescaled product, with room
INT8_SLACK = 2.0 ** -16
# float64 rounding where a float product's bound is applied, with room
FLOAT_SLACK = 2.0 ** -16
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


def product_error(dtype, d):
    """|computed - exact| of a dot product of unit vectors of length d in dtype: at
    most d unit roundings (each product, each add), with room."""
    return 1.01 * d * torch.finfo(dtype).eps / 2 + FLOAT_SLACK


def block_products(y, centres, kind, block_elements):
    """(lo, sims, unit, err) for blocks of rows y[lo:lo + len(sims)]: their products
    with every centre in the screen's format (kind "int8", "bf16", or None: y's own
    float type), the cosine of one unit of sims per row (float64), and the bound
    err on |unit * sims - cosine| per row (float64). Blocks of about
    block_elements products."""
    n, d = y.shape
    if kind == "int8":  # one scale for all centres: a row's maximum stays an integer
        qc, t, f = int8_rows(centres, common=True)
        qc, t, worst = qc.T, float(t), float(f.max())
    else:
        low = (centres.to(torch.bfloat16) if kind == "bf16" else centres).T
        bound = BF16_ERROR if kind == "bf16" else product_error(y.dtype, d)
    step = max(1, block_elements // max(1, centres.shape[0]))
    for lo in range(0, n, step):
        block = y[lo:lo + step]
        if kind == "int8":
            q, s, e = int8_rows(block)
            yield (lo, torch._int_mm(q, qc), s.double() * t,
                   (e + (1 + e) * worst + INT8_SLACK).double())
        else:
            ones = torch.ones(block.shape[0], dtype=torch.float64, device=y.device)
            yield lo, torch.mm(block.to(low.dtype), low), ones, ones * bound


__all__ = ["BF16_ERROR", "int8_rows", "screen_kind", "product_error", "block_products"]
