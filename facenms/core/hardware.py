"""What the hardware computes natively: bf16 pays only where it does (CUDA
devices from Ampere on, CPUs with AMX or AVX512_BF16); elsewhere it is
emulated, several times slower than float32. int8 products with int32 sums
run at twice the float32 rate on x86 CPUs with AVX2, four times with VNNI."""
import torch


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (oneDNN's own test: AVX512_BF16 or AMX)."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(probe()) if probe is not None else False
    except (RuntimeError, AttributeError):
        return False


def cuda_has_bf16(device) -> bool:
    """Whether the CUDA device computes bf16 natively (compute capability 8.0 on)."""
    return torch.cuda.get_device_capability(device)[0] >= 8


def native_bf16(device) -> bool:
    """Whether `device` (a torch.device) computes bf16 matrix products natively."""
    if device.type == "cuda":
        return cuda_has_bf16(device)
    return device.type == "cpu" and cpu_has_native_bf16()


def fast_int8(device) -> bool:
    """Whether `device` is an x86 CPU whose int8 matrix products beat float32
    (torch's own kernels at AVX2 or above: ATEN_CPU_CAPABILITY caps both)."""
    return device.type == "cpu" and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


# torch._int_mm on the CPU mis-sums rows of one element; short rows gain little
INT8_MIN_DIM = 16


def screen_kind(device, d):
    """'int8', 'bf16' or None: the screen of label_issues' nearest-centre search
    (facenms.core.screen) that pays on `device` for rows of d."""
    if fast_int8(device) and d >= INT8_MIN_DIM:
        return "int8"
    return "bf16" if native_bf16(device) else None
