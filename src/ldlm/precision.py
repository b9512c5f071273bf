"""bf16 autocast, and whether the hardware runs bf16 natively.

A CPU without AVX512-BF16 or AMX instructions (an AVX2-only AMD EPYC, say) emulates bf16 matrix
products: on such a machine one core ran a 512-cube product at 1.2 GFLOP/s in bf16 against 65 in fp32
(bench/bf16_cpu.py, bench/results/bf16-cpu.md). So the trainer's `train.bf16` and the feature pass use
bf16 only where `native_bf16` says it pays, and fp32 elsewhere.

`LDLM_FP32=1` in the environment makes `native_bf16` say no everywhere: the feature pass, training and the
evaluator then run fp32 on any machine, so a number measured on an fp32-only CPU can be reproduced on one with
AMX (at the cost of speed there).
"""
from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

import torch


@functools.lru_cache(maxsize=None)
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    return frozenset(w for line in text.splitlines() if line.startswith("flags") for w in line.split(":", 1)[1].split())


def native_bf16(device: torch.device | str) -> bool:
    """True where bf16 matrix products run in hardware: any CUDA device, or a CPU with AVX512-BF16 or AMX
    (False everywhere under `LDLM_FP32=1`)."""
    if os.environ.get("LDLM_FP32") == "1":
        return False
    kind = torch.device(device).type
    if kind == "cuda":
        return True
    return kind == "cpu" and bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


def autocast(device: torch.device | str, enabled: bool):
    """bf16 autocast on `device` when `enabled` (bf16, not fp16: fp16 would need a gradient scaler); else nothing."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
