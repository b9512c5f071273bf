"""The evaluation protocol (docs/design.md) over sample sets: read samples, build references, score, report.

    ev = Evaluation(eval_lm="smollm2", references=refs)   # loads the evaluator, scores refs once
    row = ev.evaluate(texts)                               # gen-PPL, entropy, MAUVE, distinct-n, ...
    print(format_table({"samples": row, "data": ev.data_row()}))

Every row is a dict of metric -> number, plus `unavailable`: metric -> the reason it has no number.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from . import metrics as M
from .data import open_text_file
from .errors import UserError

PROTOCOL = "ldlm-eval-v1"  # bump when anything changes what the numbers mean
LM_METRICS = ("gen_ppl", "entropy", "mauve")


# ---------------------------------------------------------------- inputs
def read_samples(path: str | Path, what: str = "samples file") -> tuple[list[str], dict]:
    """Texts of a samples file and the settings of its first record.

    `.jsonl`: one object per line with a `text` field (what `ldlm sample --out` writes); empty texts
    are kept, since a model that emits nothing must be scored for it. `.txt`: one sample per line.
    """
    suffix, raw = open_text_file(path, what)
    texts: list[str] = []
    meta: dict = {}
    if suffix == ".txt":
        texts = [ln.strip() for ln in raw.splitlines() if ln.strip()]
    else:
        for i, ln in enumerate(raw.splitlines(), 1):
            if not ln.strip():
                continue
            try:
                obj = json.loads(ln)
            except json.JSONDecodeError as e:
                raise UserError(f"{what} '{path}' line {i} is not JSON ({e.msg}); "
                                f"write one JSON object per line") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise UserError(f"{what} '{path}' line {i} has no string 'text' field; "
                                f"each line needs {{\"text\": ...}}")
            texts.append(obj["text"])
            if not meta:
                meta = {k: v for k, v in obj.items() if k not in ("text", "tokens", "trajectory")}
    if not texts:
        raise UserError(f"{what} '{path}' holds no texts; add some (e.g. `ldlm sample --out`)")
    return texts, meta


def validation_passages(cfg) -> list[str]:
    """The held-out passages of a run, exactly as training split them (see data.build_corpus)."""
    from .data import load_passages, split_passages

    fmt = getattr(cfg.data, "format", "passages")
    if fmt != "passages":  # owt/lm1b rows come from the hub-data memmap cache, not from passages
        raise UserError(f"--reference valid supports data.format=passages only (this run: {fmt}); "
                        f"pass --reference FILE with held-out documents (.txt or .jsonl)")
    passages = load_passages(cfg.data.corpus, cfg.data.passage_words, getattr(cfg.data, "max_line_chars", 100000))
    if cfg.data.max_passages:
        passages = passages[: cfg.data.max_passages]
    return split_passages(passages, cfg.data.valid_fraction, cfg.data.split_seed)[1]


def round_trip(texts: list[str], cfg) -> list[str]:
    """Texts as the model would emit them: through its tokenizer at its length, cut, decoded.

    An uncased tokenizer lowercases and respaces; cased references against lowercased samples drive
    MAUVE to about 0.01 even for real text (docs/design.md), so references always take this trip.
    """
    from .algorithms.base import ids_to_text
    from .data import tokenize
    from .frozen_lm import load_tokenizer

    if not texts:
        return []
    tok = load_tokenizer(cfg.model.lm)
    return ids_to_text(tok, tokenize(tok, texts, cfg.data.seq_len).ids)[1]


def pick_references(pool: list[str], n: int, seed: int = 0) -> tuple[list[str], list[str] | None]:
    """`n` references drawn without replacement (seeded), and a disjoint second set of `n` if the
    pool has room: the data row's MAUVE is set B against set A, the ceiling a model can reach."""
    order = list(range(len(pool)))
    random.Random(seed).shuffle(order)
    a = [pool[i] for i in order[:n]]
    b = [pool[i] for i in order[n: 2 * n]] if len(pool) >= 2 * n else None
    return a, b


def first_words(texts: list[str], k: int) -> list[str]:
    """Each text cut to its first `k` words (whitespace-separated)."""
    return [" ".join(t.split()[:k]) for t in texts]


def cut_to_words(refs: list[str], max_words: int) -> list[str]:
    """Without a tokenizer to round-trip through, match length by cutting to the samples' longest."""
    return first_words(refs, max_words)


# ---------------------------------------------------------------- scoring
class Evaluation:
    """Evaluator LM and reference set, loaded and scored once; then any number of sample sets."""

    def __init__(self, eval_lm: str | None = "smollm2", references: list[str] | None = None,
                 references_b: list[str] | None = None, reference_note: str = "", seed: int = 0,
                 device: str = "cpu", batch_size: int = 16, max_tokens: int = 1024, threads: int = 0,
                 bf16: bool | None = None, no_lm_reason: str = "no evaluator LM (--eval-lm none)",
                 prefix_words: int = 0):
        from .evaluator import MAUVE_MIN_SAMPLES, load_evaluator, pick_threads

        if prefix_words < 0:
            raise UserError(f"--mauve-prefix-words {prefix_words}: give a number of words >= 1, or 0 for off")
        self.threads = pick_threads(threads)
        self.seed = seed
        self.lm = None
        self.no_lm_reason = no_lm_reason
        if eval_lm:
            self.lm = load_evaluator(eval_lm, device, bf16)
            self.lm.batch_size, self.lm.max_tokens = batch_size, max_tokens
        self.references = references or None
        self.references_b = references_b or None
        self.settings = {"protocol": PROTOCOL, "seed": seed, "threads": self.threads,
                         "references": reference_note or ("none" if not references else "given"),
                         "num_references": len(references or []), "mauve_min_samples": MAUVE_MIN_SAMPLES,
                         "entropy": "mean per-sample unigram entropy (nats) of the evaluator's tokens",
                         "gen_ppl": "exp(token-weighted mean NLL over all samples), evaluator tokens",
                         "distinct": "lowercased words and punctuation; within = mean over samples, "
                                     "set = unique/all n-grams over the whole set",
                         "evaluator": self.lm.settings() if self.lm else None}
        self._ref_scored = self.lm.score(self.references, "scoring references") if self.lm and self.references else None
        # MAUVE over the first `prefix_words` words of every text as well: last-token features make whole-text
        # MAUVE weigh how texts end heavily (docs/design.md §8); the prefixes leave the endings out
        self.prefix_words = prefix_words
        self._ref_prefix_scored = None
        if prefix_words > 0:
            self.settings["mauve_prefix_words"] = prefix_words
            if self._ref_scored is not None:
                self._ref_prefix_scored = self.lm.score(first_words(self.references, prefix_words),
                                                        f"scoring references' first {prefix_words} words")

    def _score(self, texts: list[str], desc: str, scored=None):
        """Text metrics plus gen-PPL/entropy (from `scored` if already scored); returns (row, Scored or None)."""
        from .evaluator import gen_ppl

        row = M.text_metrics(texts)
        row["unavailable"] = {}
        if self.lm is None:
            for k in LM_METRICS:
                row[k] = None
                row["unavailable"][k] = self.no_lm_reason
            return row, None
        s = scored if scored is not None else self.lm.score(texts, desc)
        row["gen_ppl"], row["tokens_scored"] = gen_ppl(s)
        if row["gen_ppl"] is None:
            row["unavailable"]["gen_ppl"] = "no tokens to score (all samples empty)"
        row["entropy"] = M.mean_entropy(s.tokens)
        row["mean_tokens"] = sum(map(len, s.tokens)) / max(1, len(s.tokens))
        row["truncated"] = s.truncated
        return row, s

    def _mauve(self, row: dict, ref_scored, scored, key: str = "mauve") -> None:
        from .evaluator import mauve_score

        row[key] = None
        if scored is None:
            return  # no evaluator: reason already recorded
        if ref_scored is None:
            row["unavailable"][key] = "no reference texts (pass --reference valid|PATH, or --ckpt)"
            return
        row[key], reason = mauve_score(ref_scored.features, scored.features, seed=self.seed)
        if reason:
            row["unavailable"][key] = reason

    def _mauve_prefix(self, row: dict, texts: list[str], desc: str) -> None:
        k = self.prefix_words
        if k <= 0:
            return
        if self.lm is None:
            row["mauve_prefix"] = None
            row["unavailable"]["mauve_prefix"] = self.no_lm_reason
            return
        self._mauve(row, self._ref_prefix_scored, self.lm.score(first_words(texts, k), f"{desc}, first {k} words"),
                    "mauve_prefix")

    def evaluate(self, texts: list[str], desc: str = "scoring samples") -> dict:
        row, s = self._score(texts, desc)
        self._mauve(row, self._ref_scored, s)
        self._mauve_prefix(row, texts, desc)
        return row

    def data_row(self) -> dict | None:
        """The references scored like samples; MAUVE is a second disjoint reference set against them."""
        if not self.references:
            return None
        row, _ = self._score(self.references, "scoring references", self._ref_scored)
        if self.lm is None:
            return row
        if self.references_b is None:
            row["mauve"] = None
            row["unavailable"]["mauve"] = (f"the reference pool has fewer than {2 * len(self.references)} "
                                           f"passages, so no disjoint second set to compare")
        else:
            self._mauve(row, self._ref_scored, self.lm.score(self.references_b, "scoring references (set B)"))
            self._mauve_prefix(row, self.references_b, "scoring references (set B)")
        return row


# ---------------------------------------------------------------- reporting
COLUMNS = [("gen_ppl", "gen-PPL", "{:.1f}"), ("entropy", "entropy", "{:.3f}"), ("mauve", "MAUVE", "{:.3f}"),
           ("distinct1_set", "d1-set", "{:.3f}"), ("distinct2_set", "d2-set", "{:.3f}"),
           ("distinct3_set", "d3-set", "{:.3f}"), ("distinct2_within", "d2-in", "{:.3f}"),
           ("rep4", "rep-4", "{:.3f}"), ("mean_words", "words", "{:.1f}"), ("num", "n", "{}")]


def format_table(rows: dict[str, dict | None], columns=None) -> str:
    """A fixed-width table, one line per row, with reasons for every missing number below it."""
    rows = {k: v for k, v in rows.items() if v is not None}
    if columns is None:  # MAUVE over the texts' first words only where it was asked for
        prefix = any("mauve_prefix" in r for r in rows.values())
        columns = COLUMNS[:3] + ([("mauve_prefix", "MAUVEpre", "{:.3f}")] if prefix else []) + COLUMNS[3:]
    w = max(8, *(len(k) for k in rows))
    lines = [" " * w + "".join(f"{h:>9}" for _, h, _ in columns)]
    notes = []
    for name, r in rows.items():
        cells = []
        for key, _, fmt in columns:
            v = r.get(key)
            cells.append(f"{'n/a' if v is None else fmt.format(v):>9}")
        lines.append(f"{name:<{w}}" + "".join(cells))
        by_reason: dict[str, list[str]] = {}
        for k, why in r.get("unavailable", {}).items():
            by_reason.setdefault(why, []).append(k)
        notes += [f"  {name} {', '.join(ks)}: {why}" for why, ks in by_reason.items()]
    return "\n".join(lines + (["n/a:"] + notes if notes else []))


# ---------------------------------------------------------------- the `ldlm eval` command
def load_run_config(ckpt: str | None, meta: dict, reference: str | None):
    """The config of the checkpoint that defines the references: --ckpt, else the samples' own."""
    from . import checkpoint as ck

    if ckpt:
        return ck.load_config_of(ck.resolve_checkpoint(ckpt))
    named = meta.get("checkpoint")
    if named and Path(named).exists():
        return ck.load_config_of(ck.resolve_checkpoint(named))
    if reference == "valid":
        why = f"names checkpoint '{named}', which is not found here" if named else "name no checkpoint"
        raise UserError(f"--reference valid needs the model's checkpoint, but the samples {why}; pass --ckpt RUN_DIR")
    return None


def build_references(reference: str | None, cfg, n: int, sample_texts: list[str], seed: int):
    """(set A, set B or None, a note saying where they came from and how they were matched)."""
    if reference is None:
        return None, None, "none"
    if reference == "valid":
        pool, note = validation_passages(cfg), f"validation split of {cfg.data.corpus}"
    else:
        pool, _ = read_samples(reference, what="reference file")
        note = f"file {reference}"
    a, b = pick_references(pool, n, seed)
    if cfg is not None:
        a, b = round_trip(a, cfg), (round_trip(b, cfg) if b else None)
        note += f", round trip through {cfg.model.lm} at seq_len {cfg.data.seq_len}"
    else:
        longest = max(1, max(len(t.split()) for t in sample_texts))
        a, b = cut_to_words(a, longest), (cut_to_words(b, longest) if b else None)
        note += f", cut to {longest} words (no checkpoint: no tokenizer round trip)"
    return a, b, note + f", {len(a)} drawn with seed {seed}"


def make_evaluation(eval_lm: str | None, refs, refs_b, note: str, **kw) -> Evaluation:
    """An Evaluation; when the *default* evaluator cannot load, its metrics are marked unavailable."""
    from .evaluator import SMOLLM2

    name = SMOLLM2 if eval_lm is None else (None if eval_lm.lower() == "none" else eval_lm)
    try:
        return Evaluation(name, refs, refs_b, note, **kw)
    except UserError as e:
        if eval_lm is not None:
            raise  # asked for by name: a wrong name must not pass silently
        return Evaluation(None, refs, refs_b, note, no_lm_reason=f"default evaluator unavailable: {e}", **kw)


def run_eval(args) -> dict:
    from .cond_eval import read_conditional, run_cond_eval
    from .evaluator import evaluator_name

    records = read_conditional(args.samples)
    if records is not None:  # prompts/suffixes in the file: the conditional protocol (cond_eval.py)
        return run_cond_eval(args, records)
    texts, meta = read_samples(args.samples)
    cfg = load_run_config(args.ckpt, meta, args.reference)
    reference = args.reference or ("valid" if cfg is not None else None)
    refs, refs_b, note = build_references(reference, cfg, len(texts), texts, args.seed)
    ev = make_evaluation(args.eval_lm, refs, refs_b, note, seed=args.seed, device=eval_device(args.device),
                         batch_size=args.batch_size, max_tokens=args.max_tokens, threads=args.threads,
                         prefix_words=args.mauve_prefix_words)
    rows = {"samples": ev.evaluate(texts), "data": ev.data_row()}
    result = {"protocol": PROTOCOL, "samples_file": str(args.samples), "sample_settings": meta,
              "settings": ev.settings, "rows": rows}
    print(f"evaluator: {evaluator_name(ev.settings['evaluator'])}; protocol {PROTOCOL}")
    print(format_table(rows))
    write_result(result, args.out)
    return result


def eval_device(name: str) -> str:
    """`--device`: 'auto' is cuda when a GPU is visible, else cpu."""
    import torch

    return name if name != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")


def write_result(result: dict, out: str | None) -> None:
    """`ldlm eval --out`: the result JSON, written atomically (nothing when `out` is empty)."""
    if not out:
        return
    from .checkpoint import write_text_atomic

    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(result, indent=1) + "\n")
    print(f"written to {path}")


def add_eval_arguments(p, with_reference: bool = True) -> None:
    """Options shared by `ldlm eval` and `ldlm frontier`."""
    if with_reference:
        p.add_argument("--reference", help="'valid' (the checkpoint's held-out split, default when a checkpoint is "
                       "known) or a .txt/.jsonl file of reference texts")
    p.add_argument("--eval-lm", help="evaluator causal LM: 'smollm2' (offline default: SmolLM2-135M-Instruct "
                   "Q4_1 GGUF), 'gpt2-large' (GPT-2 Large from the hub, paper-comparable), a folder, a .gguf file, "
                   "another hub id, or 'none'")
    p.add_argument("--seed", type=int, default=0, help="seed of the reference draw and of MAUVE")
    p.add_argument("--batch-size", type=int, default=16, help="texts per evaluator batch")
    p.add_argument("--max-tokens", type=int, default=1024, help="evaluator tokens per text (longer ones are cut)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all cores this process may use)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--mauve-prefix-words", type=int, default=0, metavar="K",
                   help="also report MAUVE over every text's first K words, samples and references alike "
                   "('mauve_prefix'): whole-text MAUVE reads the last token, so it weighs how texts end heavily "
                   "(0 = off, the default)")
