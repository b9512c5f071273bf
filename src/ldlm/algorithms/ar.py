"""AR: a GPT-style causal transformer over the same tokenizer, length and blocks as LDLM.

Sequences are `[CLS] tokens [SEP] [PAD]*`. [CLS] is given; the model predicts every real token
after it, [SEP] included (so it learns where a passage ends); pads after [SEP] are not trained, as
they are implied by [SEP]. Sampling starts from [CLS] with a key/value cache and stops at [SEP].
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..blocks import TokenTransformer
from ..config import Config, SampleConfig
from ..vocab import corpus_specials
from .base import Algorithm


def sample_tokens(logits: torch.Tensor, temperature: float, top_p: float,
                  generator: torch.Generator) -> torch.Tensor:
    """One token per row of `logits` [N, V], with temperature and nucleus (top-p) filtering.

    Inverse-CDF sampling in float64: float32 categorical sampling truncates the tail and lowers
    diversity (Zheng et al. 2024), and one uniform per row (not one Gumbel per vocabulary entry)
    keeps memory at O(N). `temperature <= 0` is greedy decoding; uniforms are drawn on the CPU from
    `generator`, so samples are reproducible across devices.
    """
    n = logits.shape[0]
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # the smallest prefix holding top_p of the mass (the most likely token is always kept)
        keep = (sorted_p.cumsum(-1) - sorted_p) < top_p
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p * keep)
    cdf = probs.cumsum(dim=-1)
    u = torch.rand(n, 1, generator=generator, dtype=torch.float64).to(logits.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_max(logits.shape[-1] - 1)


def baseline_net(cfg: Config, tokenizer, never: tuple[int, ...] = ()) -> TokenTransformer:
    """The network of both baselines (AR causal, MDLM bidirectional), sized by `model.width/layers`;
    `never`: input-only tokens, never an output."""
    m = cfg.model
    return TokenTransformer(len(tokenizer), cfg.data.seq_len, m.width, m.layers, m.heads, m.mlp_ratio, m.dropout,
                            unk_id=tokenizer.unk_token_id or 0, never=never)


class Baseline(Algorithm):
    """What AR and MDLM share: the `TokenTransformer` in `self.net` and its output vocabulary."""

    def prepare(self, corpus, device, rows: dict | None = None) -> None:
        super().prepare(corpus, device, rows)
        if self.cfg.model.readout_vocab == "corpus":  # the same output vocabulary as LDLM's readout
            self.net.set_vocab(torch.unique(corpus.train.ids), always=corpus_specials(self.tokenizer))

    def legacy_state(self) -> dict[str, torch.Tensor]:
        # checkpoints from before the output vocabulary was a buffer were trained over the full one
        return {"net.allowed": self.net.full_vocab(self.vocab_size)}


class AR(Baseline):
    name = "ar"
    suffix_ok = False

    def __init__(self, cfg: Config, tokenizer):
        super().__init__(cfg, tokenizer)
        self.net = baseline_net(cfg, tokenizer)
        self.cls_id, self.sep_id, self.pad_id = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id

    def _nll(self, ids, mask, accuracy: bool = True):
        """Summed next-token NLL over real targets, their number, and the number predicted correctly
        (None unless `accuracy`)."""
        h = self.net(ids[:, :-1], causal=True)
        tgt_mask = mask[:, 1:]
        # the vocabulary-wide head only where there is a target (pads are most of nothing, but free to skip)
        logits = self.net.logits(h[tgt_mask])
        targets = self.net.to_local(ids[:, 1:][tgt_mask])
        nll = F.cross_entropy(logits, targets, reduction="sum")
        correct = (logits.argmax(-1) == targets).sum() if accuracy else None
        return nll, tgt_mask.sum(), correct

    def loss(self, batch, step):
        nll, n, correct = self._nll(batch["ids"], batch["mask"], accuracy=self.step_logs)
        loss = nll / n
        logs = {"loss": loss.detach()}  # tensors: the trainer reads them once per log interval, no sync per step
        if correct is not None:
            logs["acc"] = (correct / n).detach()
        return loss, logs

    @torch.no_grad()
    def evaluate(self, batch, generator):
        """Validation NLL per predicted token (nats; [SEP] included, [CLS] given) and perplexity. Under
        a corpus output vocabulary a held-out token never seen in training is scored as [UNK]."""
        nll, n, correct = self._nll(batch["ids"], batch["mask"])
        nll = (nll / n).item()
        return {"loss": nll, "nll": nll, "ppl": math.exp(nll), "acc": (correct / n).item()}

    @torch.no_grad()
    def generate_ids(self, num, sc: SampleConfig, generator, device, kv_cache: bool = True, callback=None,
                     given=None):
        """Left to right from [CLS]; after a row's [SEP] it is filled with [PAD]. `kv_cache=False`
        recomputes the whole prefix each step (the reference the cache is tested against).
        `callback(i - 1, None, ids)` after each token (AR has no diffusion time). `given`: a prompt
        (a prefix of given positions), fed in place of the sampled tokens."""
        L = self.cfg.data.seq_len
        if given is not None:
            given = given.to(device)
        ids = torch.full((num, L), self.pad_id, dtype=torch.long, device=device)
        ids[:, 0] = self.cls_id
        done = torch.zeros(num, dtype=torch.bool, device=device)
        caches = self.net.new_caches() if kv_cache else None
        lex = self.lexicon() if sc.lexicon else None
        node = torch.zeros(num, dtype=torch.long, device=device)  # the lexicon's state: between words
        for i in range(1, L):
            if kv_cache:
                h = self.net(ids[:, i - 1:i], causal=True, caches=caches, start=i - 1)
            else:
                h = self.net(ids[:, :i], causal=True)
            logits = self.net.logits(h[:, -1])
            if lex is not None:  # only tokens that keep the word one of the training split's
                logits = logits.masked_fill(~lex.allowed(node), float("-inf"))
            tok = self.net.to_global(sample_tokens(logits, sc.temperature, sc.top_p, generator))
            if given is not None:
                tok = torch.where(given.mask[:, i], given.ids[:, i], tok)
            if lex is not None:
                node = lex.advance(node, self.net.to_local(tok))
            ids[:, i] = torch.where(done, self.pad_id, tok)
            done |= tok == self.sep_id
            if i == L - 1:
                ids[~done, -1] = self.sep_id  # close passages that ran to the length limit, as the data does
            if callback is not None:
                callback(i - 1, None, ids)
            if bool(done.all()):
                break
        return ids
