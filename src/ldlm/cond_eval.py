"""The conditional evaluation protocol (`ldlm-cond-v1`): prompt continuation and infilling.

Samples come from held-out passages split into given and hidden parts (`ldlm sample --from valid`:
prompt = the first half of the tokens, or `--infill`: the middle third hidden), with the true hidden
part kept in each record. Each record is read as three strings, left (the prompt), middle (what was
written) and right (the suffix, '' for a continuation), and scored with the evaluator LM:

- gen_ppl: exp(token-weighted mean NLL of the middle given the left), evaluator tokens;
- entropy (mean per-sample unigram entropy of the middle's tokens), distinct-n, rep-4, words (of the middle);
- mauve: the whole passages against the true whole passages (last-token features);
- swap: NLL per token of the middle under its own left minus under another record's left (a fixed
  seeded derangement), averaged over records: clearly below 0 when the continuation follows its prompt;
- infilling also: suffix_ppl (exp of the NLL per token of the given right given left + middle: does the
  middle lead into it?) and swap_right (the right's NLL per token after its own middle minus after
  another record's middle, same left): below 0 when the middle fits its suffix.

The data row scores the true hidden parts the same way (its MAUVE is n/a: it would be the references
against themselves). Context and scored text are tokenised separately (`Evaluator.score_given`), so the
swapped and unswapped scores are over the same tokens.
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

from . import metrics as M
from .data import open_text_file
from .errors import UserError

PROTOCOL = "ldlm-cond-v1"  # bump when anything changes what the numbers mean

COLUMNS = [("gen_ppl", "gen-PPL", "{:.1f}"), ("suffix_ppl", "sfx-PPL", "{:.1f}"), ("entropy", "entropy", "{:.3f}"),
           ("mauve", "MAUVE", "{:.3f}"), ("swap", "swap", "{:+.3f}"), ("swap_right", "swap-R", "{:+.3f}"),
           ("distinct2_set", "d2-set", "{:.3f}"), ("rep4", "rep-4", "{:.3f}"), ("mean_words", "words", "{:.1f}"),
           ("num", "n", "{}")]


def read_conditional(path: str | Path) -> list[dict] | None:
    """The records of a conditional samples file (.jsonl with `prompt` fields), or None for any other file."""
    suffix, raw = open_text_file(path, "samples file")
    if suffix != ".jsonl":
        return None
    recs = []
    for ln in raw.splitlines():
        if not ln.strip():
            continue
        try:
            obj = json.loads(ln)
        except json.JSONDecodeError:
            return None  # evaluation.read_samples gives the error
        recs.append(obj)
    if not recs or not all(isinstance(r, dict) and "prompt" in r for r in recs):
        return None
    return recs


def pieces(rec: dict, key: str = "text") -> tuple[str, str, str]:
    """(left, middle, right) of a record's passage: the given prompt and suffix are its ends verbatim;
    whitespace after the middle goes with the right, so the middle's tokens carry no trailing space."""
    text, p, s = rec.get(key), rec.get("prompt") or "", rec.get("suffix") or ""
    if not isinstance(text, str) or not text.startswith(p) or not text.endswith(s) or len(text) < len(p) + len(s):
        raise UserError(f"a conditional record's '{key}' does not start with its 'prompt' and end with its 'suffix' "
                        f"({str(text)[:40]!r}...); score files as `ldlm sample` wrote them")
    mid = text[len(p): len(text) - len(s)]
    core = mid.rstrip()
    return p, core, mid[len(core):] + s


def derangement(n: int, seed: int) -> list[int]:
    """A seeded permutation with no fixed point (n >= 2): each record is paired with another's context."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    perm = [0] * n
    for k, i in enumerate(order):
        perm[i] = order[(k + 1) % n]
    return perm


def _swap(own, swapped, idx: list[int]) -> tuple[float | None, float | None]:
    """Mean over records of (own - swapped) NLL per token, and its standard error; `own` is indexed by
    `idx`, `swapped` by position in it."""
    d = [(own.nll[i] - swapped.nll[k]) / own.n_scored[i] for k, i in enumerate(idx) if own.n_scored[i]]
    if len(d) < 2:
        return None, None
    mean = sum(d) / len(d)
    var = sum((x - mean) ** 2 for x in d) / (len(d) - 1)
    return mean, math.sqrt(var / len(d))


class CondEvaluation:
    """The evaluator LM (or None) and the protocol's settings; `rows` scores sample sets beside the data."""

    def __init__(self, lm, seed: int = 0, no_lm_reason: str = "no evaluator LM (--eval-lm none)"):
        self.lm, self.seed, self.no_lm_reason = lm, seed, no_lm_reason
        self.settings = {
            "protocol": PROTOCOL, "seed": seed, "evaluator": lm.settings() if lm else None,
            "gen_ppl": "exp(token-weighted mean NLL of the written middle given the prompt), evaluator tokens",
            "suffix_ppl": "infilling: exp(token-weighted mean NLL of the given suffix given prompt + middle)",
            "swap": "mean over records of NLL/token of the middle under its own prompt minus under another "
                    "record's (seeded derangement); swap_right: the suffix after its own middle minus another's",
            "mauve": "prompt + middle (+ suffix) against prompt + true middle (+ suffix), last-token features",
            "entropy": "mean per-sample unigram entropy (nats) of the middle's evaluator tokens"}

    def score(self, triples: list[tuple[str, str, str]], desc: str) -> tuple[dict, object]:
        """One row for (left, middle, right) triples, and the whole passages' features (or None)."""
        from .evaluator import gen_ppl

        row = M.text_metrics([m for _, m, _ in triples])
        row["unavailable"] = {}
        keys = ("gen_ppl", "entropy", "mauve", "swap", "suffix_ppl", "swap_right")
        if self.lm is None:
            for k in keys:
                row[k] = None
                row["unavailable"][k] = self.no_lm_reason
            return row, None
        n = len(triples)
        lefts, mids, rights = ([t[i] for t in triples] for i in range(3))
        own = self.lm.score_given(lefts, mids, f"{desc}: middles")
        row["gen_ppl"], row["tokens_scored"] = gen_ppl(own)
        if row["gen_ppl"] is None:
            row["unavailable"]["gen_ppl"] = "no tokens to score (every middle is empty)"
        row["entropy"] = M.mean_entropy(own.tokens)
        row["mean_tokens"] = sum(map(len, own.tokens)) / max(1, n)
        feats = own.features.copy() if own.features is not None else None
        # swap test on the records that have a prompt
        with_left = [i for i in range(n) if lefts[i]]
        row["swap"] = row["swap_se"] = None
        if len(with_left) >= 2:
            perm = derangement(len(with_left), self.seed)
            swapped = self.lm.score_given([lefts[with_left[perm[k]]] for k in range(len(with_left))],
                                          [mids[i] for i in with_left], f"{desc}: swapped prompts")
            row["swap"], row["swap_se"] = _swap(own, swapped, with_left)
        if row["swap"] is None:
            row["unavailable"]["swap"] = "needs two or more records with a prompt and a non-empty middle"
        # infilling: the suffix given what came before it, and after another record's middle
        with_right = [i for i in range(n) if rights[i].strip()]
        row["suffix_ppl"] = row["swap_right"] = row["swap_right_se"] = None
        if with_right:
            ctx = [lefts[i] + mids[i] for i in with_right]
            sfx = self.lm.score_given(ctx, [rights[i] for i in with_right], f"{desc}: suffixes")
            row["suffix_ppl"], _ = gen_ppl(sfx)
            for k, i in enumerate(with_right):
                feats[i] = sfx.features[k]  # this pass saw the whole passage
            if len(with_right) >= 2:
                perm = derangement(len(with_right), self.seed)
                swapped = self.lm.score_given([lefts[i] + mids[with_right[perm[k]]] for k, i in enumerate(with_right)],
                                              [rights[i] for i in with_right], f"{desc}: swapped middles")
                row["swap_right"], row["swap_right_se"] = _swap(sfx, swapped, list(range(len(with_right))))
        if row["suffix_ppl"] is None:
            row["unavailable"]["suffix_ppl"] = "no record has a suffix (a continuation)"
        if row["swap_right"] is None:
            row["unavailable"]["swap_right"] = "needs two or more records with a suffix"
        return row, feats

    def rows(self, sets: dict[str, list[dict]]) -> dict[str, dict | None]:
        """Rows for named record lists, and a `data` row from the first list's true hidden parts.
        All lists must hold the same prompts (as `ldlm sample --from` writes them for every model)."""
        from .evaluator import mauve_score

        first = next(iter(sets.values()))
        has_refs = all("reference_text" in r for r in first)
        data, ref_feats = (None, None)
        if has_refs:
            data, ref_feats = self.score([pieces(r, "reference_text") for r in first], "data")
            if self.lm is not None:
                data["mauve"] = None
                data["unavailable"]["mauve"] = "the references themselves (MAUVE would be 1 by construction)"
        out: dict[str, dict | None] = {}
        for name, recs in sets.items():
            if has_refs and [(r["prompt"], r["suffix"]) for r in recs] != [(r["prompt"], r["suffix"]) for r in first]:
                raise UserError(f"sample set '{name}' has other prompts than '{next(iter(sets))}'; "
                                f"sample every model from the same --from passages and --num")
            row, feats = self.score([pieces(r) for r in recs], name)
            if self.lm is not None:
                row["mauve"] = None
                if ref_feats is None:
                    row["unavailable"]["mauve"] = ("no true continuations in the samples (sample with --from FILE "
                                                   "or --from valid to keep them)")
                else:
                    row["mauve"], why = mauve_score(ref_feats, feats, seed=self.seed)
                    if why:
                        row["unavailable"]["mauve"] = why
            out[name] = row
        out["data"] = data
        return out


def format_table(rows: dict[str, dict | None]) -> str:
    from .evaluation import format_table as fmt

    return fmt(rows, COLUMNS)


def run_cond_eval(args, records: list[dict]) -> dict:
    """`ldlm eval` on a conditional samples file: the `ldlm-cond-v1` rows, printed and optionally written."""
    from .evaluation import eval_device, make_evaluation, write_result
    from .evaluator import evaluator_name

    if getattr(args, "reference", None):
        raise UserError("--reference does not apply to conditional samples: their true continuations are in "
                        "the file (sample with --from); drop --reference")
    if getattr(args, "mauve_prefix_words", 0):
        raise UserError("--mauve-prefix-words does not apply to conditional samples (their MAUVE compares whole "
                        "passages with the true ones); drop it")
    ev = make_evaluation(args.eval_lm, None, None, "", seed=args.seed, device=eval_device(args.device),
                         batch_size=args.batch_size, max_tokens=args.max_tokens, threads=args.threads)
    cond = CondEvaluation(ev.lm, args.seed, ev.no_lm_reason)
    rows = cond.rows({"samples": records})
    meta = {k: v for k, v in records[0].items() if k not in ("text", "tokens", "prompt", "suffix", "written",
                                                             "reference", "reference_text")}
    result = {"protocol": PROTOCOL, "samples_file": str(args.samples), "sample_settings": meta,
              "settings": {**cond.settings, "threads": ev.threads}, "rows": rows}
    print(f"evaluator: {evaluator_name(cond.settings['evaluator'])}; protocol {PROTOCOL}")
    print(format_table(rows))
    write_result(result, args.out)
    return result
