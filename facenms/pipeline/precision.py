"""The precision extraction and proxy training run at: amp="auto" resolved
for the device, and a warning for an explicit choice the hardware emulates.

bf16 autocast pays only where the hardware computes in bf16 (CUDA devices
from Ampere on, CPUs with AMX or AVX512_BF16); on other CPUs oneDNN emulates
it and runs several times slower than plain fp32 with channels_last.
"""
import sys

import torch

from ..core.hardware import cpu_has_native_bf16, cuda_has_bf16

AMP_CHOICES = ("auto", "bf16", "fp16", None)


def check_amp(amp):
    """amp as given ("auto", "bf16", "fp16", None; "none" / "fp32" mean None), or ValueError."""
    if isinstance(amp, str) and amp.lower() in ("none", "fp32"):
        return None
    if amp not in AMP_CHOICES:
        raise ValueError("amp must be 'auto', 'bf16', 'fp16' or None, got %r" % (amp,))
    return amp


def resolve_amp(amp, device, what="extract"):
    """The autocast precision to run: "bf16", "fp16" or None (fp32).

    ``amp="auto"``: bf16 where the device computes it natively, fp16 on a
    CUDA device without bf16, else None. An explicit "bf16" or "fp16" is kept,
    with a one-line warning on stderr (from ``what``) where it would be
    emulated. Raises ValueError for anything else.
    """
    amp = check_amp(amp)
    dev = torch.device(device)
    if dev.type == "cuda":
        native = {"bf16": cuda_has_bf16(dev), "fp16": True}
    elif dev.type == "cpu":
        # fp16 autocast on the CPU runs through oneDNN only with AVX512_FP16/AMX-FP16
        native = {"bf16": cpu_has_native_bf16(), "fp16": False}
    else:
        native = {"bf16": False, "fp16": False}
    if amp == "auto":
        if native["bf16"]:
            return "bf16"
        return "fp16" if dev.type == "cuda" else None
    if amp is not None and not native[amp]:
        print("facenms %s: warning: amp=%r on this %s is emulated, not native, and runs "
              "several times slower than amp='auto' (%s)" % (
                  what, amp, dev.type, resolve_amp("auto", dev) or "fp32"),
              file=sys.stderr, flush=True)
    return amp


def describe(amp) -> str:
    """How a log line names a resolved precision."""
    return "amp %s" % amp if amp else "fp32"
