"""bf16 autocast, and whether the hardware runs bf16 natively.

A CPU without AVX512-BF16 or AMX instructions (an AVX2-only AMD EPYC, say) emulates bf16 matrix
products: on such a machine one core ran a 512-cube product at 1.2 GFLOP/s in bf16 against 65 in fp32
(bench/bf16_cpu.py, bench/results/bf16-cpu.md). So the trainer's `train.bf16` and the feature pass use
bf16 only where `native_bf16` says it pays, and fp32 elsewhere.

`LDLM_FP32=1` in the environment makes `native_bf16` say no everywhere: the feature pass, training and the
evaluator then run fp32 on any machine, so a number measured on an fp32-only CPU can be reproduced on one with
AMX (at the cost of speed there).

CPU attention's bf16 kernel is ~9x slower than its fp32 one at this library's widths (16.9 ms against 1.9 ms a call
on an AMX Xeon, bench/results/bf16-xeon-s16/), enough to make a whole bf16 training step slower than fp32. So under
bf16 autocast on CPU, attention runs in fp32 (`sdpa`, and `fp32_attention_on_cpu` for Hugging Face models) while
the matrix products around it keep bf16's speed; on GPU the bf16 flash kernels are the fast path and stay.
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
HF_ATTENTION = "ldlm_sdpa"  # the name `fp32_attention_on_cpu` registers in transformers' AttentionInterface


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


def compute_precision(device: torch.device | str) -> str:
    """How a frozen model's forward runs on `device` (the feature cache's key holds it): 'fp32', 'bf16', or on a
    CPU 'bf16+fp32-attention' (features made before attention ran in fp32 there differ, and are not reused)."""
    if not native_bf16(device):
        return "fp32"
    return "bf16+fp32-attention" if torch.device(device).type == "cpu" and CPU_BF16_ATTENTION_IN_FP32 else "bf16"


def autocast(device: torch.device | str, enabled: bool):
    """bf16 autocast on `device` when `enabled` (bf16, not fp16: fp16 would need a gradient scaler); else nothing."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def _upcast_here(q: torch.Tensor) -> bool:
    return q.device.type == "cpu" and q.dtype == torch.bfloat16 and CPU_BF16_ATTENTION_IN_FP32


def _fp32(x):
    return x.float() if isinstance(x, torch.Tensor) and x.is_floating_point() else x


def sdpa(q, k, v, attn_mask=None, **kw) -> torch.Tensor:
    """`scaled_dot_product_attention`, in fp32 on CPU when its inputs are bf16 (the result cast back to bf16)."""
    if not _upcast_here(q):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, **kw)
    with torch.autocast("cpu", enabled=False):  # autocast would cast the fp32 inputs straight back to bf16
        y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=_fp32(attn_mask), **kw)
    return y.to(q.dtype)


def _hf_sdpa(module, query, key, value, attention_mask, **kw):
    """transformers' own SDPA attention, with `sdpa`'s fp32 rule on CPU."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if not _upcast_here(query):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kw)
    with torch.autocast("cpu", enabled=False):
        out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(),
                                              _fp32(attention_mask), **{n: _fp32(x) for n, x in kw.items()})
    return out.to(query.dtype), weights


def fp32_attention_on_cpu(model) -> bool:
    """Switch a Hugging Face model that uses SDPA attention to `_hf_sdpa` (the same kernel, fp32 on CPU under bf16
    autocast); True if switched. Models on another attention implementation are left alone."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    from transformers import AttentionInterface

    AttentionInterface.register(HF_ATTENTION, _hf_sdpa)
    model.set_attn_implementation(HF_ATTENTION)
    return True
