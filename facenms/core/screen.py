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

from . import ops

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
INT8_MAX = 63  # also kInt8Max in csrc/cpu/int8_rows_kernel.cpp


def int8_rows(v, common=False):
    """(q int8, scale, residual norms (n,)) with v ~ scale * q for float32 rows v on
    the CPU: each row scaled to +-INT8_MAX and rounded half to even, with a
    scale per row (n,), or with `common` one for all rows (0-d); the residual
    norms |v - scale q| are float32 (their rounding is in INT8_SLACK). One
    fused op, facenms::int8_rows."""
    return ops.int8_rows(v.contiguous(), common)


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


__all__ = ["BF16_ERROR", "int8_rows", "product_error", "block_products"]
