"""A lexicon-constrained readout: per-position token scores decoded so that every word is one the training corpus holds.

A parallel readout takes each position's best token on its own, so at a low reconstruction accuracy neighbouring
positions disagree about the word they are in: a word piece lands after a word it does not continue ("been" +
"##eold") and the text fills with non-words. Non-autoregressive translation meets the same thing and decodes its
parallel scores under a constraint instead (CTC's lexicon decoding is the closest kin). Here the constraint is
WordPiece's: a word is a start token followed by its "##" continuations, and a word must be one the training split
spells. `Lexicon` is a trie of those words over the readout's local ids; `decode` is a beam search over positions
that maximises the summed log-probabilities (or, at a temperature, samples left to right) among the token sequences
the trie allows. The model is not run again: it is a decoding rule on the same scores, as argmax is.
"""
from __future__ import annotations

import torch

from .errors import UserError

ROOT = 0  # the state between words: the next token must start one
END = 1  # after [SEP]/[PAD]: only [PAD] follows, at no cost (the text is cut at the end token anyway)


class Lexicon:
    """The training split's words as a trie over local token ids, in tensors a batched beam search can index.

    `start_node[v]`: the node a word that starts with token v reaches (-1: v starts no word); `terminal[n]`: the
    tokens up to node n spell a whole word; `child_tok[n]`, `child_node[n]`: node n's continuations (padded with -1).
    """

    def __init__(self, words, continuation: torch.Tensor, ends: tuple[int, ...], pad: int):
        vocab = continuation.numel()
        children: list[dict[int, int]] = [{}, {pad: END}]
        terminal = [True, True]
        start: dict[int, int] = {e: END for e in ends}
        for word in words:
            first = int(word[0])
            if continuation[first]:
                continue  # a continuation piece with nothing before it: not a word
            if first not in start:
                start[first] = len(children)
                children.append({})
                terminal.append(False)
            node = start[first]
            for tok in word[1:]:
                tok = int(tok)
                nxt = children[node].get(tok)
                if nxt is None:
                    nxt = len(children)
                    children[node][tok] = nxt
                    children.append({})
                    terminal.append(False)
                node = nxt
            terminal[node] = True
        self.start_node = torch.full((vocab,), -1, dtype=torch.long)
        for tok, node in start.items():
            self.start_node[tok] = node
        width = max(1, max(len(c) for c in children))
        self.child_tok = torch.full((len(children), width), -1, dtype=torch.long)
        self.child_node = torch.full((len(children), width), -1, dtype=torch.long)
        for n, c in enumerate(children):
            if c:
                self.child_tok[n, : len(c)] = torch.tensor(list(c.keys()))
                self.child_node[n, : len(c)] = torch.tensor(list(c.values()))
        self.terminal = torch.tensor(terminal)
        self.num_words = sum(terminal) - 2

    @classmethod
    def from_ids(cls, ids: torch.Tensor, mask: torch.Tensor, to_local, continuation: torch.Tensor,
                 specials: tuple[int, ...], ends: tuple[int, ...], pad: int) -> "Lexicon":
        """The words of token rows `ids` [n, L] (global ids, `mask` on real tokens), in local ids (`to_local`).
        `continuation` [V_local]: the pieces that continue a word; `specials` (local): tokens that are no word
        ([CLS], [SEP], [PAD], [UNK]); `ends` (local): the end tokens. A row that fills all L positions was cut by the
        tokenizer, so its last word may be cut too: it is left out."""
        local = to_local(ids)
        special = torch.zeros(continuation.numel(), dtype=torch.bool)
        special[list(specials)] = True
        words = set()
        for row, m, cut in zip(local.tolist(), mask.sum(1).tolist(), mask.all(1).tolist()):
            word: list[int] = []
            for tok in row[: m - 1 if cut else m]:  # a cut row: up to its last word, which stays unflushed
                if special[tok]:
                    if word:
                        words.add(tuple(word))
                    word = []
                elif continuation[tok]:
                    if word:  # an orphan continuation (after a special) is no word
                        word.append(tok)
                else:
                    if word:
                        words.add(tuple(word))
                    word = [tok]
            if word and not cut:
                words.add(tuple(word))
        return cls(sorted(words), continuation, ends, pad)

    def to(self, device) -> "Lexicon":
        for name in ("start_node", "child_tok", "child_node", "terminal"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def allowed(self, node: torch.Tensor) -> torch.Tensor:
        """[B, V] bool: the tokens that may follow each row's state `node` [B] -- a new word's start where the
        current word is whole, the current word's continuations, and after the end only [PAD]."""
        ok = (self.start_node >= 0)[None, :] & (self.terminal[node] & (node != END))[:, None]
        ctok = self.child_tok[node]
        hits = torch.zeros(ok.shape, dtype=torch.int32, device=ok.device)
        hits.scatter_add_(1, ctok.clamp_min(0), (ctok >= 0).int())
        return ok | (hits > 0)

    def advance(self, node: torch.Tensor, tok: torch.Tensor) -> torch.Tensor:
        """The state after writing `tok` in state `node` (tensors of one shape); a token the lexicon does not allow
        there (a prompt's) leaves the search between words."""
        hit = self.child_tok[node] == tok[..., None]
        child = self.child_node[node].gather(-1, hit.int().argmax(-1, keepdim=True)).squeeze(-1)
        return torch.where(hit.any(-1), child, self.start_node[tok].clamp_min(ROOT))

    @torch.no_grad()
    def decode(self, logp: torch.Tensor, beam: int = 8, temperature: float = 0.0,
               generator: torch.Generator | None = None, first: int = 1,
               forced: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Local ids [B, L] from log-probabilities `logp` [B, L, V] (or any per-position scores): the best-scoring
        sequence the lexicon allows (a beam of `beam`), or at `temperature` > 0 one sampled left to right from the
        allowed tokens at that temperature. Positions before `first` keep their argmax (the [CLS] slot); `forced` =
        (mask [B, L], local ids [B, L]) writes those tokens where the mask is set (a prompt), whatever the lexicon
        says, and the search goes on from them."""
        b, L, V = logp.shape
        dev = logp.device
        k = 1 if temperature > 0 else beam
        is_start = self.start_node >= 0
        score = torch.full((b, k), float("-inf"), device=dev)
        score[:, 0] = 0.0  # one live beam to start from
        node = torch.full((b, k), ROOT, dtype=torch.long, device=dev)
        hist = torch.zeros((b, k, 0), dtype=torch.long, device=dev)
        rows = torch.arange(b, device=dev)[:, None]
        width = self.child_tok.shape[1]
        for i in range(first, L):
            lp = logp[:, i].float()  # [B, V]
            at_end = node == END
            ctok = self.child_tok[node]  # [B, k, W]
            # a new word where the current one is whole [B, k, V]; a continuation of the current one [B, k, W]
            start = (score[..., None] + lp[:, None, :]).masked_fill(
                ~is_start | ~(self.terminal[node] & ~at_end)[..., None], float("-inf"))
            cont = score[..., None] + torch.where(at_end[..., None], 0.0, lp[rows[..., None], ctok.clamp_min(0)])
            cand = torch.cat([start, cont.masked_fill(ctok < 0, float("-inf"))], -1).view(b, -1)
            if temperature > 0:
                p = torch.softmax(cand / temperature, -1)
                pick = torch.multinomial(p.nan_to_num(1.0).cpu(), 1, generator=generator).to(dev)
                new_score = cand.gather(1, pick)
            else:
                new_score, pick = cand.topk(k, -1)
            parent, j = pick // (V + width), pick % (V + width)
            c = (j - V).clamp_min(0)
            tok = torch.where(j < V, j, ctok[rows, parent].gather(2, c[..., None]).squeeze(-1))
            if forced is not None and bool(forced[0][:, i].any()):  # every beam writes the prompt's token
                fr, want = forced[0][:, i, None], forced[1][:, i, None]
                new_score = torch.where(fr, score + lp.gather(1, want), new_score)
                parent = torch.where(fr, torch.arange(k, device=dev).expand(b, k), parent)
                tok = torch.where(fr, want.expand(b, k), tok)
            hist = torch.cat([hist[rows, parent], tok[..., None]], -1)
            score, node = new_score, self.advance(node.gather(1, parent), tok)
        # the passage must not stop inside a word, where a whole one is on offer
        final = score.masked_fill(~self.terminal[node], float("-inf"))
        final = torch.where(torch.isfinite(final).any(1, keepdim=True), final, score)
        out = logp.argmax(-1)
        out[:, first:] = hist[rows.squeeze(1), final.argmax(1)]
        return out


def continuation_pieces(tokenizer, vocab_size: int) -> torch.Tensor:
    """[vocab_size] bool over global ids: the WordPiece tokens that continue a word ("##..."). A tokenizer without
    them (GPT-2's BPE marks word starts instead) is a one-line error."""
    cont = torch.zeros(vocab_size, dtype=torch.bool)
    for piece, i in tokenizer.get_vocab().items():
        if piece.startswith("##") and i < vocab_size:
            cont[i] = True
    if not bool(cont.any()):
        raise UserError("sample.lexicon_beam needs a WordPiece tokenizer (pieces marked '##'), as MiniLM's and BERT's "
                        "are; this model's has none: set sample.lexicon_beam=0")
    return cont
