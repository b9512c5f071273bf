"""Where sample sets end: the share at the length limit and, of the shorter ones, the share ending with a mark.

    .venv/bin/python bench/results/mauve-endings-s18/lengths.py OUT.json SAMPLES.jsonl [SAMPLES.jsonl ...]

Texts are re-tokenised with the model's tokenizer (configs/tiny.yaml: MiniLM, 48 tokens with [CLS]/[SEP]); a
text of 48 tokens or more is "at the limit". References: `ldlm eval --reference valid`'s sets A and B (seed 0).
"""
import json
import re
import sys

from ldlm.config import load_config
from ldlm.evaluation import build_references
from ldlm.frozen_lm import load_tokenizer


def stats(tok, texts, limit):
    n = [len(tok(t)["input_ids"]) for t in texts]
    mark = [bool(re.search(r"[.,;:!?]$", t.strip())) for t in texts]
    short = [m for m, k in zip(mark, n) if k < limit]
    return {"n": len(texts), "at_limit": round(sum(k >= limit for k in n) / len(n), 3),
            "ends_with_mark": round(sum(mark) / len(mark), 3),
            "shorter_ends_with_mark": round(sum(short) / max(1, len(short)), 3),
            "mean_tokens": round(sum(n) / len(n), 1)}


def main(out, files):
    cfg = load_config("configs/tiny.yaml")
    a, b, _ = build_references("valid", cfg, 256, [], 0)
    tok = load_tokenizer(cfg.model.lm)
    sets = {"refs A": a, "refs B": b}
    for f in files:
        sets[f] = [json.loads(line)["text"] for line in open(f)]
    rows = [{"set": k, **stats(tok, v, cfg.data.seq_len)} for k, v in sets.items()]
    for r in rows:
        print(json.dumps(r))
    json.dump({"limit_tokens": cfg.data.seq_len, "rows": rows}, open(out, "w"), indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
