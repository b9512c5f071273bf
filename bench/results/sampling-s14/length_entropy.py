"""Per-sample unigram entropy over MiniLM tokens (a proxy for the evaluator's), references whole and cut to 87 %,
against two sample files of the demo checkpoint of seed 0. Run from the repository root (needs runs/s11/)."""
import collections
import json
import math

import torch

import ldlm.checkpoint as ck
from ldlm.evaluation import pick_references, round_trip, validation_passages
from ldlm.trainer import load_tokenizer

torch.set_num_threads(1)
cfg = ck.load_config_of(ck.resolve_checkpoint("runs/s11/demo-seed0"))
tok = load_tokenizer(cfg.model.lm)
refs = round_trip(pick_references(validation_passages(cfg), 256, 0)[0], cfg)


def entropy(ids):
    n = len(ids)
    return -sum(v / n * math.log(v / n) for v in collections.Counter(ids).values()) if n else 0.0


def stats(texts, keep=None):
    es, ls = [], []
    for t in texts:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        ids = ids[:max(1, round(len(ids) * keep))] if keep else ids
        es.append(entropy(ids))
        ls.append(len(ids))
    return {"entropy": sum(es) / len(es), "tokens": sum(ls) / len(ls)}


out = {"data": stats(refs), "data cut to 87 %": stats(refs, 34 / 39)}
for ns in ("1.0", "1.2"):
    f = f"runs/s11/fr-seed0/samples-S25_ns{ns}_rb0.1_rT0.0.jsonl"
    out[f"samples noise {ns}"] = stats([json.loads(line)["text"] for line in open(f)])
print(json.dumps(out, indent=1))
