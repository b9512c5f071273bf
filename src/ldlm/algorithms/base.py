"""The interface every generative model (LDLM, MDLM, AR) implements for the common trainer."""
from __future__ import annotations

import torch
from torch import nn

from ..config import Config, SampleConfig, keys_for
from ..data import Corpus, load_corpus
from ..lexicon import Lexicon, continuation_pieces


class Algorithm(nn.Module):
    """A text generator trained by `trainer.train` and sampled by `generate.generate`.

    Subclasses implement `loss`, `evaluate` and `generate_ids`; the rest has sensible defaults.
    Token ids are the tokenizer's; every sequence has the fixed length `cfg.data.seq_len`.
    """

    name = "base"
    # the SampleConfig keys this algorithm's sampler reads (from config.ONLY_FOR, set per subclass by its
    # `name`); any other sampling flag is an error
    sample_keys: tuple[str, ...] = keys_for(name, "sample")
    suffix_ok = True  # can condition on a suffix (not AR, which writes left to right)
    # set by the trainer before each step: whether that step's logs will be read (its last before a log line);
    # when False, `loss` may leave out diagnostics that cost work, such as the argmax behind token accuracy
    step_logs = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.sample_keys = keys_for(cls.name, "sample")

    def __init__(self, cfg: Config, tokenizer):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer)
        self.splits: dict = {}
        self._lexicon: Lexicon | None = None  # the training split's words, built on first use (sample.lexicon)

    # -- data -----------------------------------------------------------------------------
    def prepare(self, corpus: Corpus, device, rows: dict | None = None) -> None:
        """Called once before training with the tokenised corpus (e.g. to cache features). `rows`
        ({'train': idx, 'valid': idx}; None = all) are the rows training will read: a hint, any row must work;
        'train_order', if there, is the order training draws its rows in (the first epoch's)."""
        self.splits = {"train": corpus.train, "valid": corpus.valid}

    def get_batch(self, split: str, idx: torch.Tensor, device) -> dict:
        s = self.splits[split]
        return {"ids": s.ids[idx].to(device), "mask": s.mask[idx].to(device)}

    # -- training -------------------------------------------------------------------------
    def forward(self, batch: dict, step: int) -> tuple[torch.Tensor, dict]:
        """= `loss`; the trainer calls the model through this, so a DDP/compile wrapper sees the step."""
        return self.loss(batch, step)

    def loss(self, batch: dict, step: int) -> tuple[torch.Tensor, dict]:
        """Scalar loss to minimise and a dict to log (floats or 0-dim tensors: the trainer reads tensors
        once per log interval, so a step needs no device sync for logging)."""
        raise NotImplementedError

    def on_optimizer_step(self) -> None:
        """Called once after every optimizer step that was not skipped (e.g. to refit a timestep sampler)."""

    def interval_logs(self) -> dict:
        """Costly training diagnostics, computed once per log interval (floats)."""
        return {}

    @torch.no_grad()
    def evaluate(self, batch: dict, generator: torch.Generator) -> dict:
        """Validation metrics on one held-out batch (deterministic given `generator`)."""
        raise NotImplementedError

    def log_extras(self) -> dict:
        """Extra JSON-able state for the metrics log at eval time (e.g. the timestep density)."""
        return {}

    def extra_state(self) -> dict[str, torch.Tensor]:
        """Non-parameter training state to checkpoint (e.g. the adaptive timestep sampler)."""
        return {}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        pass

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint stores: everything but frozen pre-trained weights."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("frozen.lm.")}

    def legacy_state(self) -> dict[str, torch.Tensor]:
        """Values for state that checkpoints of an older version lack (what those runs trained with)."""
        return {}

    def param_counts(self) -> dict[str, int]:
        """Trainable embedding / non-embedding and frozen parameter counts (`blocks.param_counts`)."""
        from ..blocks import param_counts

        return param_counts(self, self.vocab_size)

    def output_vocab(self):
        """The module of the output softmax (a `vocab.VocabSubset`: to_local, to_global, vocab_ids), or None."""
        from ..vocab import VocabSubset

        return next((m for m in self.modules() if isinstance(m, VocabSubset)), None)

    def output_vocab_size(self) -> int:
        """Tokens the output softmax runs over (`model.readout_vocab`: the corpus's, or all)."""
        head = self.output_vocab()
        return int(head.allowed.sum()) if head is not None else self.vocab_size

    # -- sampling -------------------------------------------------------------------------
    @torch.no_grad()
    def generate_ids(self, num: int, sc: SampleConfig, generator: torch.Generator, device,
                     callback=None, given=None) -> torch.Tensor:
        """[num, L] token ids. `callback(i, t, state)`, if given, is called once per sampling step
        with the algorithm's current state (`trajectory_ids` turns it into token ids). `given` (a
        `conditioning.Given`): the given tokens are kept at their positions."""
        raise NotImplementedError

    def trajectory_ids(self, state) -> torch.Tensor:
        """[num, L] token ids of a sampling state passed to `generate_ids`' callback."""
        return state

    def lexicon(self, corpus: Corpus | None = None) -> Lexicon:
        """The training split's words over the output vocabulary (`lexicon.Lexicon`), built once from `corpus` or,
        if none is given, from the corpus the config names (read again: a checkpoint does not hold its text)."""
        out = self.output_vocab()
        if self._lexicon is None:
            tok = self.tokenizer
            if corpus is None:
                corpus = load_corpus(self.cfg.data, tok, self.cfg.model.lm)

            def loc(ids):  # global -> the output softmax's local ids, on the CPU
                return out.to_local(torch.as_tensor(ids, device=out.allowed.device)).cpu()

            cont = continuation_pieces(tok, self.vocab_size)[out.vocab_ids().cpu()]
            specials = [i for i in (tok.cls_token_id, tok.sep_token_id, tok.pad_token_id, tok.unk_token_id)
                        if i is not None]
            self._lexicon = Lexicon.from_ids(corpus.train.ids, corpus.train.mask, loc, cont,
                                             tuple(loc(specials).tolist()),
                                             tuple(loc([tok.sep_token_id, tok.pad_token_id]).tolist()),
                                             int(loc([tok.pad_token_id])[0]))
        return self._lexicon.to(out.allowed.device)


def ids_to_text(tokenizer, ids: torch.Tensor, mask_id: int | None = None) -> tuple[list[list[int]], list[str]]:
    """Cut each row at its first end/pad token (after a leading [CLS]/BOS) and detokenise.

    With `mask_id`, each such token (MDLM's not-yet-decided positions) is shown as '░'."""
    stops = {tokenizer.sep_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id} - {None}
    starts = {tokenizer.cls_token_id, tokenizer.bos_token_id} - {None}

    def decode(row):
        return tokenizer.decode(row, skip_special_tokens=True, clean_up_tokenization_spaces=True)

    toks, texts = [], []
    for row in ids.tolist():
        if row and row[0] in starts:
            row = row[1:]
        cut = next((i for i, t in enumerate(row) if t in stops), len(row))
        row = row[:cut]
        toks.append(row)
        if mask_id is None or mask_id not in row:
            texts.append(decode(row))
            continue
        parts, seg = [], []
        for t in row + [None]:
            if t == mask_id or t is None:
                if seg:
                    parts.append(decode(seg))
                    seg = []
                if t is not None:
                    parts.append("░")
            else:
                seg.append(t)
        texts.append(" ".join(p for p in parts if p))
    return toks, texts
