"""Where and in what precision solGPT runs: the torchrun process layout, the device, the dtype and its autocast,
and each device's peak FLOP/s for MFU. Shared by train.py, sample.py and bench.py (one set of rules for all)."""

import os
import shutil
from contextlib import nullcontext

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Dist:
    """Where this process stands in a torchrun job (a single process is rank 0 of 1)."""

    def __init__(self):
        self.enabled = int(os.environ.get("RANK", -1)) != -1
        self.rank = int(os.environ.get("RANK", 0))
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.world_size = int(os.environ.get("WORLD_SIZE", 1))
        self.master = self.rank == 0


def resolve_device(pref, dist_info=None):
    if pref == "auto":
        if torch.cuda.is_available():
            pref = "cuda"
        elif torch.backends.mps.is_available():
            pref = "mps"
        else:
            pref = "cpu"
    try:
        device = torch.device(pref)
    except RuntimeError:
        raise SystemExit(f"error: --device={pref} is not a device (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device=cuda but CUDA is not available here; use --device=cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise SystemExit("error: --device=mps but MPS is not available here; use --device=cpu or auto")
    if device.type == "cuda" and dist_info is not None and dist_info.enabled:
        device = torch.device("cuda", dist_info.local_rank)  # one GPU per rank
    return device


def cuda_bf16_native(device):
    """Whether this CUDA device runs bfloat16 in hardware (Ampere and later, ROCm). Pre-Ampere GPUs (V100, T4) only
    emulate it, slower than float16, which is why torch's default including_emulation=True is the wrong question;
    asked of `device` itself, not of whichever GPU happens to be current."""
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def cpu_has_amx():
    """Whether this CPU has AMX tile units (Intel Xeon since Sapphire Rapids), which multiply bfloat16 matrices in
    hardware. Other CPUs (AVX-512 BF16 dot products at most, e.g. AMD EPYC) gained nothing measurable from bf16
    autocast in a whole training run here, so they stay in float32."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe())


def resolve_dtype(pref, device, training=False):
    """training: a training step (batch x block tokens per matmul). On a CPU with AMX that runs 1.3x faster in bf16
    autocast (1.9x with torch.compile) than float32, and whole runs keep that speed (README "Ablations"); batch-1
    decoding (sample.py, complete.py) is faster in float32 there."""
    if pref != "auto":
        return DTYPES[pref]
    if device.type == "cuda":
        return torch.bfloat16 if cuda_bf16_native(device) else torch.float16
    if device.type == "cpu" and training and cpu_has_amx():
        return torch.bfloat16
    return torch.float32  # MPS bf16 support varies by OS version


def compile_unavailable(device):
    """Why torch.compile cannot run on `device` here (a one-line reason), or None when it can. On a CPU, Inductor
    writes C++ and needs a compiler on PATH; on MPS its backend is still experimental."""
    device = torch.device(device)
    if device.type == "mps":
        return "torch.compile on MPS is experimental"
    if device.type == "cpu" and not any(shutil.which(cxx) for cxx in (os.environ.get("CXX", "c++"), "g++", "clang++",
                                                                      "cl")):
        return "torch.compile on a CPU needs a C++ compiler on PATH (none found: install g++ or clang)"
    return None


def autocast(device, dtype):
    return nullcontext() if dtype == torch.float32 else torch.autocast(device_type=device.type, dtype=dtype)


# Dense (no sparsity) tensor-core peak in bf16 (fp16 where the chip has no bf16: V100, T4), from the vendors' data
# sheets. Matched against torch.cuda.get_device_name(), longest key first, so "H100 PCIe" wins over "H100".
PEAK_FLOPS = {
    "B200": 2250e12,
    "H200": 989e12,
    "GH200": 989e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,  # SXM
    "H800": 989e12,
    "A100": 312e12,
    "A800": 312e12,
    "L40S": 362e12,
    "L40": 181e12,
    "L4": 121e12,
    "A10G": 70e12,
    "A10": 125e12,
    "A6000": 155e12,
    "RTX 4090": 165e12,  # GeForce: fp32 accumulate, as PyTorch uses
    "RTX 3090": 71e12,
    "V100": 125e12,
    "T4": 65e12,
}


def device_peak_flops(device, dtype=torch.float32):
    """Best-known peak FLOP/s of `device` (str or torch.device) in the precision a run computes in (`dtype`, on a
    CPU); 0 when unknown (MFU then reads 0)."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key in sorted(PEAK_FLOPS, key=len, reverse=True):
            if key.lower() in name.lower():
                return PEAK_FLOPS[key]
        return 0.0
    if device.type == "mps":
        return 10e12  # rough: Apple M-series GPUs are ~3-30 TFLOP/s fp32; override with peak_flops for yours
    # CPU, rough: two FMA units per core at ~3 GHz: 32 fp32 FLOPs/cycle with AVX2, 64 with AVX-512; AMX's tiles
    # multiply bf16 at 1,024 FLOPs/cycle (Intel's figure for Sapphire Rapids), so a bf16 run's MFU reads far lower
    per_cycle = 64 if "AVX512" in torch.backends.cpu.get_cpu_capability() else 32
    if dtype == torch.bfloat16 and cpu_has_amx():
        per_cycle = 1024
    return torch.get_num_threads() * 3e9 * per_cycle
