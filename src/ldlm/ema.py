"""Exponential moving average of a model's trained state: parameters *and* buffers.

Buffers matter: the latent encoder's BatchNorm keeps running statistics, which evaluation and
sampling use. Averaging the parameters alone would pair the EMA encoder with the raw model's
statistics; here floating-point buffers are averaged with the same decay (as timm's ModelEmaV2
does with the whole state dict) and the others (counters, masks) follow the model's current value.
Frozen pre-trained weights (`frozen.lm.*`) and non-persistent buffers are left out.
"""
from __future__ import annotations

import contextlib

import torch

from .checkpoint import check_fits

FROZEN = "frozen.lm."


def ema_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The buffers a checkpoint saves (persistent, not the frozen LM's), by state-dict name."""
    out = {}
    for mod_name, mod in model.named_modules():
        for n, b in mod.named_buffers(recurse=False):
            name = f"{mod_name}.{n}" if mod_name else n
            if b is not None and n not in mod._non_persistent_buffers_set and not name.startswith(FROZEN):
                out[name] = b
    return out


def ema_params(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


class EMA:
    """EMA of the trainable parameters and buffers; `state_dict()` is what `ema.safetensors` holds."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.params = {n: p.detach().clone().float() for n, p in ema_params(model).items()}
        self.buffers = {n: b.detach().clone() for n, b in ema_buffers(model).items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for n, p in ema_params(model).items():
            self.params[n].lerp_(p.detach().float(), 1.0 - self.decay)
        for n, b in ema_buffers(model).items():
            if b.is_floating_point():
                self.buffers[n].lerp_(b.detach().to(self.buffers[n].dtype), 1.0 - self.decay)
            else:
                self.buffers[n].copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**self.params, **self.buffers}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], model: torch.nn.Module, what: str) -> None:
        """Load `ema.safetensors`; a checkpoint from before buffers were averaged keeps the model's."""
        params, bufs = ema_params(model), ema_buffers(model)
        check_fits({k: v for k, v in tensors.items() if k not in bufs}, params, what)
        present = {k: b for k, b in bufs.items() if k in tensors}
        check_fits({k: tensors[k] for k in present}, present, what)
        self.params = {k: tensors[k].float().to(p.device) for k, p in params.items()}
        self.buffers = {k: (tensors[k] if k in tensors else b).detach().clone().to(b.device, b.dtype)
                        for k, b in bufs.items()}

    @contextlib.contextmanager
    def swapped_in(self, model: torch.nn.Module):
        """Temporarily run the model with the EMA parameters and buffers."""
        live = {**ema_params(model), **ema_buffers(model)}
        avg = self.state_dict()
        backup = {n: t.detach().clone() for n, t in live.items() if n in avg}
        with torch.no_grad():
            for n in backup:
                live[n].copy_(avg[n])
        try:
            yield model
        finally:
            with torch.no_grad():
                for n, t in backup.items():
                    live[n].copy_(t)


@torch.no_grad()
def apply_ema(model: torch.nn.Module, tensors: dict[str, torch.Tensor], what: str) -> None:
    """Copy the EMA state of `ema.safetensors` into `model` (for sampling)."""
    ema = EMA(model, 0.0)
    ema.load_state_dict(tensors, model, what)
    live = {**ema_params(model), **ema_buffers(model)}
    for n, t in ema.state_dict().items():
        live[n].copy_(t)
