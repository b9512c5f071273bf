"""How much of MAUVE's verdict is the passages' endings? (session 18 diagnostic, not a library feature)

The evaluator's MAUVE features are the last token's hidden state, so a set whose texts end differently from the
references' (mid-word at the length limit instead of at an end mark) can score low whatever comes before. This
scores, against `ldlm eval --reference valid`'s set A (256 held-out passages, seed 0, round-tripped at tiny's
length): set B as is (the data row), set B with its endings changed (end mark removed; last 1-3 words dropped),
and the same for sample files; then everything cut to its first K words on both sides, which takes the
endings out of the comparison.

    .venv/bin/python bench/results/mauve-endings-s18/endings.py OUT.json SAMPLES.jsonl [SAMPLES.jsonl ...]
"""
import json
import random
import re
import sys

from ldlm.config import load_config
from ldlm.evaluation import build_references, first_words
from ldlm.evaluator import SMOLLM2, gen_ppl, load_evaluator, mauve_score

K = 20  # words kept when the endings are taken out


def no_end_mark(t: str) -> str:
    return re.sub(r"[\s.,;:!?'\"]+$", "", t)


def drop_words(texts, seed=0):
    rng = random.Random(seed)
    return [" ".join(t.split()[: max(1, len(t.split()) - rng.randint(1, 3))]) for t in texts]


def main(out, sample_files):
    cfg = load_config("configs/tiny.yaml")
    a, b, _ = build_references("valid", cfg, 256, [], 0)
    lm = load_evaluator(SMOLLM2, "cpu", None)
    ref = lm.score(a, "refs A")
    ref_k = lm.score(first_words(a, K), f"refs A, first {K} words")
    sets = {"data (set B)": b, "set B, end mark removed": [no_end_mark(t) for t in b],
            "set B, last 1-3 words dropped": drop_words(b)}
    for f in sample_files:
        sets[f] = [json.loads(line)["text"] for line in open(f)]
    rows = []
    for name, texts in sets.items():
        s = lm.score(texts, name)
        s_k = lm.score(first_words(texts, K), name + f", first {K} words")
        ends = sum(bool(re.search(r"[.,;:!?]$", t.strip())) for t in texts) / len(texts)
        row = {"set": name, "n": len(texts), "ends_with_mark": round(ends, 3),
               "mauve": mauve_score(ref.features, s.features, seed=0)[0], "gen_ppl": gen_ppl(s)[0],
               f"mauve_first{K}": mauve_score(ref_k.features, s_k.features, seed=0)[0],
               f"gen_ppl_first{K}": gen_ppl(s_k)[0]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    json.dump({"references": "ldlm eval --reference valid, set A (256, seed 0), configs/tiny.yaml", "k": K,
               "rows": rows}, open(out, "w"), indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
