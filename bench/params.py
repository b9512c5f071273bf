"""Parameter counts of every model, split as embedding / non-embedding / frozen, and its output vocabulary.

    .venv/bin/python bench/params.py          # the tiny configs -> bench/results/params.json, params.md
    .venv/bin/python bench/params.py --configs configs/owt.yaml --no-vocab

"Matched parameters" can hide most of a baseline in its embedding table: at width 256 the tied
30,522-row embedding of the AR/MDLM baselines is 7.8 M of their 12.6 M, while LDLM's trainable
parameters are almost all non-embedding and it reads a frozen pre-trained LM besides. This table
states all three counts (`blocks.param_counts`: embedding = trainable tensors with a vocabulary-sized
dimension) and the size of each model's output softmax under its `model.readout_vocab` (the
training corpus's tokens + specials, or all). Models are built, never trained: seconds, plus the
tokenisation of the corpus for the vocabulary column (cached under data.cache_dir).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("LDLM_QUIET", "1")

import benchlib as B  # noqa: E402

DEFAULT_CONFIGS = ("configs/tiny.yaml,configs/tiny-tencdm.yaml,configs/tiny-ar.yaml,configs/tiny-mdlm.yaml,"
                   "configs/tiny-ar-nonemb.yaml,configs/tiny-mdlm-nonemb.yaml")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"comma list (default {DEFAULT_CONFIGS})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every config")
    p.add_argument("--no-vocab", action="store_true", help="skip the output-vocabulary column (no corpus needed)")
    p.add_argument("--out", default=str(B.RESULTS / "params.json"), help="JSON path; the table goes beside it (.md)")
    return p.parse_args(argv)


def count(cfg_path: str, overrides: list[str], vocab: bool, cfg=None) -> dict:
    """Parameter counts (and with `vocab` the output vocabulary) of a config file, or of `cfg` if given."""
    import torch

    from ldlm.config import load_config
    from ldlm.data import build_corpus
    from ldlm.trainer import setup_model
    from ldlm.vocab import VocabSubset, corpus_specials

    cfg = cfg or load_config(cfg_path, ["train.device=cpu", *overrides])
    model = setup_model(cfg, torch.device("cpu"))
    row = {"config": cfg_path, "algo": cfg.algo, "readout_vocab": cfg.model.readout_vocab,
           "tokenizer_vocab": model.vocab_size, **model.param_counts()}
    if vocab and cfg.data.format == "passages":
        # what every model's prepare() does to its output vocabulary, without LDLM's feature caching
        if cfg.model.readout_vocab == "corpus":
            head = next(m for m in model.modules() if isinstance(m, VocabSubset))
            corpus = build_corpus(cfg.data, model.tokenizer, cfg.model.lm)
            head.set_vocab(torch.unique(corpus.train.ids), always=corpus_specials(model.tokenizer))
        row["output_vocab"] = model.output_vocab_size()
    return row


NAMES = {"tencdm": "TEncDM"}


def _n(v) -> str:
    return "n/a" if v is None else f"{v:,}"


def markdown(res: dict, header: bool = True) -> str:
    m = res["machine"]
    lines = [f"Command: `{m['command']}` ({m['date']}, commit {m['commit']}); counts from `blocks.param_counts`: "
             "embedding = trainable tensors with a vocabulary-sized dimension.", ""] if header else []
    lines += ["| config | model | trainable | embedding | non-embedding | frozen | output vocabulary |",
              "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        ov = r.get("output_vocab")
        vocab = "n/a" if ov is None else f"{ov:,} of {r['tokenizer_vocab']:,} ({r['readout_vocab']})"
        name = NAMES.get(r["algo"], r["algo"].upper())
        lines.append(f"| `{r['config']}` | {name} | {_n(r['trainable'])} | {_n(r['embedding'])} | "
                     f"{_n(r['non_embedding'])} | {_n(r['frozen'])} | {vocab} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    a = parse_args(argv)
    configs = [c.strip() for c in a.configs.split(",") if c.strip()]
    for c in configs:
        if not (B.ROOT / c).is_file() and not Path(c).is_file():
            sys.exit(f"config '{c}' not found; pass existing YAML files with --configs")
    res = {"benchmark": "params", "machine": B.machine_info("cpu"), "set": a.set,
           "rows": [count(c if Path(c).is_file() else str(B.ROOT / c), a.set, not a.no_vocab) for c in configs]}
    if argv is not None:
        res["machine"]["command"] = " ".join(["bench/params.py", *argv])
    for r in res["rows"]:  # the names as given (repository-relative), not this machine's absolute paths
        r["config"] = next(c for c in configs if r["config"].endswith(c))
    out = Path(a.out)
    B.write_json(out, res)
    out.with_suffix(".md").write_text(markdown(res), encoding="utf-8")
    B.log(markdown(res, header=False))
    B.log(f"written: {out}, {out.with_suffix('.md')}")
    return res


if __name__ == "__main__":
    main()
