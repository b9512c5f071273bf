"""bf16 autocast, and whether the hardware runs bf16 fast enough to use it.

A CPU without AVX512-BF16 or AMX instructions (an AVX2-only AMD EPYC, say) emulates bf16 matrix
products: on such a machine one core ran a 512-cube product at 1.2 GFLOP/s in bf16 against 65 in fp32
(bench/bf16_cpu.py, bench/results/bf16-cpu.md). AVX512-BF16 alone is not enough either: on a Xeon with it and
without AMX the same product ran at 0.59x fp32's speed (2 threads) and tiny's training step at 0.70x
(bench/results/precision-step-s24/), where an AMX Xeon ran the product at 4.1x and the step at 1.18-1.28x
(bench/results/bf16-xeon-s16/, precision-step-s17/). So the trainer's `train.bf16`, the feature pass and the
evaluator use bf16 only where `native_bf16` says it pays -- AMX on CPU, any GPU -- and fp32 elsewhere.

`LDLM_FP32=1` in the environment makes `native_bf16` say no everywhere: the feature pass, training and the
evaluator then run fp32 on any machine, so a number measured on an fp32-only CPU can be reproduced on one with
AMX (at the cost of speed there).

CPU attention's bf16 *backward* kernel is several times slower than its fp32 one at this library's widths (the
bf16 flash-attention kernel took 16.9 ms a call against 1.9 ms in a tiny training step on an AMX Xeon,
bench/results/bf16-xeon-s16/), enough to make a whole bf16 training step slower than fp32. So under bf16 autocast on
CPU, attention that autograd will differentiate runs in fp32 (`sdpa`), while the matrix products around it keep
bf16's speed. Inference (the frozen LM's feature pass, the evaluator, sampling) keeps bf16 attention: its forward
kernel is not the slow one, and an fp32 detour measured slower there (bench/results/precision-step-s17/). On GPU
the bf16 flash kernels are the fast path and stay.
"""
from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

import torch
import torch.nn.functional as F

# attention in fp32 on CPU under bf16 autocast; a switch so that bench/precision_step.py can time both ways
CPU_BF16_ATTENTION_IN_FP32 = True


@functools.lru_cache(maxsize=None)
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    return frozenset(w for line in text.splitlines() if line.startswith("flags") for w in line.split(":", 1)[1].split())


def native_bf16(device: torch.device | str) -> bool:
    """True where bf16 matrix products run faster than fp32's: any CUDA device, or a CPU with AMX (not one with
    AVX512-BF16 alone, module docstring). False everywhere under `LDLM_FP32=1`."""
    if os.environ.get("LDLM_FP32") == "1":
        return False
    kind = torch.device(device).type
    if kind == "cuda":
        return True
    return kind == "cpu" and "amx_bf16" in _cpu_flags()


def autocast(device: torch.device | str, enabled: bool):
    """bf16 autocast on `device` when `enabled` (bf16, not fp16: fp16 would need a gradient scaler); else nothing."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def _upcast_here(q, k, v) -> bool:
    return (q.device.type == "cpu" and q.dtype == torch.bfloat16 and CPU_BF16_ATTENTION_IN_FP32
            and torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad))


def sdpa(q, k, v, attn_mask=None, **kw) -> torch.Tensor:
    """`scaled_dot_product_attention`; in fp32 on CPU when its inputs are bf16 and autograd will differentiate it
    (the result cast back to bf16)."""
    if not _upcast_here(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, **kw)
    with torch.autocast("cpu", enabled=False):  # autocast would cast the fp32 inputs straight back to bf16
        if attn_mask is not None and attn_mask.is_floating_point():  # an additive mask must match the inputs' dtype
            attn_mask = attn_mask.float()
        y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=attn_mask, **kw)
    return y.to(q.dtype)
