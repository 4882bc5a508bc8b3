"""Where and in what precision solGPT runs: the torchrun process layout, the device, the dtype and its autocast,
and each device's peak FLOP/s for MFU. Shared by train.py, sample.py and bench.py (one set of rules for all)."""

import os
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


def resolve_dtype(pref, device):
    if pref != "auto":
        return DTYPES[pref]
    if device.type == "cuda":
        return torch.bfloat16 if cuda_bf16_native(device) else torch.float16
    return torch.float32  # CPU autocast is slower than fp32 for training; MPS bf16 support varies by OS version


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


def device_peak_flops(device):
    """Best-known peak FLOP/s of `device` (str or torch.device); 0 when unknown (MFU then reads 0)."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key in sorted(PEAK_FLOPS, key=len, reverse=True):
            if key.lower() in name.lower():
                return PEAK_FLOPS[key]
        return 0.0
    if device.type == "mps":
        return 10e12  # rough: Apple M-series GPUs are ~3-30 TFLOP/s fp32; override with peak_flops for yours
    # CPU, rough: two FMA units per core at ~3 GHz: 32 fp32 FLOPs/cycle with AVX2, 64 with AVX-512
    per_cycle = 64 if "AVX512" in torch.backends.cpu.get_cpu_capability() else 32
    return torch.get_num_threads() * 3e9 * per_cycle
