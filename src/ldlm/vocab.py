"""The output vocabulary: the subset of the tokenizer's tokens a model's softmax runs over.

`model.readout_vocab=corpus` restricts every model's output softmax (LDLM's readout, AR's and MDLM's
tied head) to the tokens the training corpus uses, plus the specials; 'full' keeps them all. A
token never seen in training is one no model should emit, and the vocabulary-wide softmax is the
most expensive op of a small model's step. Logits are over the subset ("local" ids, in tokenizer
order); `to_local`/`to_global` convert, and a token outside the subset maps to [UNK].
"""
from __future__ import annotations

import torch


class VocabSubset:
    """Mixin for an `nn.Module`: an `allowed` bool buffer over the tokenizer's vocabulary (saved
    with the weights, so a checkpoint samples over the vocabulary it was trained with) and `unk_id`.
    Call `init_vocab` in `__init__`."""

    def init_vocab(self, vocab: int, unk_id: int, never: tuple[int, ...] = ()) -> None:
        self.unk_id = unk_id
        self.vocab_never = tuple(never)  # input-only tokens (MDLM's [MASK]): never an output
        self.register_buffer("allowed", self.full_vocab(vocab))

    def full_vocab(self, vocab: int) -> torch.Tensor:
        """The `allowed` mask of the 'full' output vocabulary: every token but the input-only ones."""
        allowed = torch.ones(vocab, dtype=torch.bool)
        allowed[list(self.vocab_never)] = False
        return allowed

    @torch.no_grad()
    def set_vocab(self, token_ids: torch.Tensor, always: tuple[int, ...] = ()) -> None:
        """Restrict the outputs to `token_ids` (e.g. every id of the training split) + `always` + [UNK]."""
        allowed = torch.zeros_like(self.allowed)
        allowed[token_ids.flatten().to(allowed.device)] = True
        allowed[list(always) + [self.unk_id]] = True
        allowed[list(self.vocab_never)] = False
        self.allowed.copy_(allowed)

    def _tables(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        # derived once per value of the buffer (in-place writes bump its version; .to() replaces it),
        # so a forward pass costs no nonzero() and no device sync
        a = self.allowed
        key = (a.device, a.data_ptr(), a._version)
        if getattr(self, "_vocab_key", None) != key:
            self._vocab_cache = (a.nonzero().squeeze(1), a.long().cumsum(0) - 1, bool(a.all()))
            self._vocab_key = key
        return self._vocab_cache

    def vocab_ids(self) -> torch.Tensor:
        """Global ids of the output vocabulary, in order: local id i is global id vocab_ids()[i]."""
        return self._tables()[0]

    def vocab_is_full(self) -> bool:
        """Every token is an output (local ids = global ids)."""
        return self._tables()[2]

    def to_local(self, ids: torch.Tensor) -> torch.Tensor:
        local = self._tables()[1]
        return torch.where(self.allowed[ids], local[ids], local[self.unk_id])

    def to_global(self, local: torch.Tensor) -> torch.Tensor:
        return self.vocab_ids()[local]


def corpus_specials(tokenizer) -> tuple[int, ...]:
    """The special tokens a target sequence holds besides text ([PAD], [CLS], [SEP])."""
    return tuple(i for i in (tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id) if i is not None)
