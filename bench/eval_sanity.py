"""Does the evaluation protocol tell text from non-text? Real held-out passages against the same
passages with their words shuffled, and against one passage repeated, each scored like samples.

    .venv/bin/python bench/eval_sanity.py                 # configs/tiny.yaml's corpus and length, 128 passages
    .venv/bin/python bench/eval_sanity.py --quick         # 16 passages (smoke test)

The references are `ldlm eval`'s (`--reference valid`: two disjoint sets drawn from the validation split,
round-tripped through the model's tokenizer); the scored passages are further validation passages disjoint
from both, round-tripped the same way. Shuffling keeps every word (so entropy and distinct-n) and destroys
the order: gen-PPL must rise and MAUVE fall. One passage repeated keeps fluency and destroys diversity:
MAUVE and distinct-n must fall while gen-PPL stays that of real text. Writes eval-sanity.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("LDLM_QUIET", "1")

import benchlib as B  # noqa: E402

ROWS = (("real", "real held-out text"), ("shuffled", "the same passages, words shuffled within each"),
        ("repeated", "one of them, repeated"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(B.ROOT / "configs" / "tiny.yaml"), help="corpus, tokenizer and length")
    p.add_argument("--num", type=int, help="passages per row and per reference set (default 128; --quick 16)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-lm", help="evaluator (default smollm2, offline)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", help="output folder (default bench/results; --quick bench/results/quick)")
    a = p.parse_args(argv)
    a.num = a.num or (16 if a.quick else 128)
    a.out = Path(a.out or (B.RESULTS / "quick" if a.quick else B.RESULTS))
    return a


def texts_to_score(pool: list[str], refs_used: set[str], n: int, seed: int) -> list[str]:
    """`n` validation passages that are in neither reference set (seeded draw)."""
    rest = [p for p in pool if p not in refs_used]
    if len(rest) < n:
        sys.exit(f"the validation split has {len(rest)} passages outside the references, fewer than --num {n}; "
                 f"lower --num")
    return random.Random(seed + 1).sample(rest, n)


def shuffle_words(texts: list[str], seed: int = 0) -> list[str]:
    """Each text with its words in a seeded random order (the same words, no order)."""
    rng = random.Random(seed)
    out = []
    for t in texts:
        w = t.split()
        rng.shuffle(w)
        out.append(" ".join(w))
    return out


def markdown(res: dict, header: bool = True) -> str:
    cols = [("gen_ppl", "gen-PPL", "{:.1f}"), ("entropy", "entropy", "{:.3f}"), ("mauve", "MAUVE", "{:.3f}"),
            ("distinct2_set", "distinct-2 (set)", "{:.3f}"), ("unique_texts", "unique", "{}")]
    lines = []
    if header:
        m = res["machine"]
        lines += ["# Evaluation sanity: text against non-text", "",
                  f"- command: `{m['command']}`", f"- machine: {B.describe_machine(m)}",
                  f"- date: {m['date']}; commit {m['commit']}", ""]
    lines += [B.evaluator_caption(res["eval_settings"].get("evaluator"), res["protocol"]) +
              f" References: {res['eval_settings']['references']}.", "",
              "| samples | " + " | ".join(c[1] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]

    def fmt(v, f):
        return "n/a" if v is None else f.format(v)

    for key, label in ROWS:
        r = res["rows"][key]
        lines.append(f"| {label} | " + " | ".join(fmt(r.get(k), f) for k, _, f in cols) + " |")
    d = res["data"]
    lines.append("| data row (references A; MAUVE = set B against A) | "
                 + " | ".join(fmt(d.get(k), f) for k, _, f in cols) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    a = parse_args(argv)
    B.set_threads(a.threads)
    device = B.pick_device(a.device)
    a.out.mkdir(parents=True, exist_ok=True)
    from ldlm.config import load_config
    from ldlm.evaluation import (PROTOCOL, build_references, make_evaluation, pick_references, round_trip,
                                 validation_passages)

    cfg = load_config(a.config)
    pool = validation_passages(cfg)
    refs, refs_b, note = build_references("valid", cfg, a.num, [], a.seed)
    raw_a, raw_b = pick_references(pool, a.num, a.seed)  # the same draw, before the round trip
    real = round_trip(texts_to_score(pool, set(raw_a) | set(raw_b or []), a.num, a.seed), cfg)
    sets = {"real": real, "shuffled": shuffle_words(real, a.seed), "repeated": [real[0]] * len(real)}
    ev = make_evaluation(a.eval_lm, refs, refs_b, note, seed=a.seed, device=device, batch_size=16, threads=a.threads)
    t0 = time.time()
    rows = {k: ev.evaluate(sets[k], desc=f"scoring {k}") for k, _ in ROWS}
    res = {"benchmark": "eval-sanity", "protocol": PROTOCOL, "machine": B.machine_info(device),
           "settings": {"config": a.config, "num": a.num, "seed": a.seed}, "eval_settings": ev.settings,
           "data": ev.data_row(), "rows": rows, "examples": {k: v[:2] for k, v in sets.items()},
           "wall_s": time.time() - t0}
    B.write_json(a.out / "eval-sanity.json", res)
    (a.out / "eval-sanity.md").write_text(markdown(res), encoding="utf-8")
    B.log(f"written: {a.out / 'eval-sanity.json'}, {a.out / 'eval-sanity.md'}")
    return res


if __name__ == "__main__":
    main()
