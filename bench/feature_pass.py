"""The frozen LM's feature pass over the demo's training rows: every row at full length against `pad_zero`
(rows in order of length, each batch cut to its longest row; what LDLM asks for unless a bidirectional token
decoder reads padding positions).

    .venv/bin/python bench/feature_pass.py --out bench/results/feature-pass

Times `features.compute_features` on `--rows` rows drawn evenly from those the demo (`configs/tiny.yaml`, seed 0)
reads, the two ways interleaved `--repeats` times, and checks that the real positions agree. Run it on an
otherwise idle machine: these are wall-clock times. Writes feature_pass.json / feature_pass.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import torch  # noqa: E402

import benchlib as B  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(B.ROOT / "configs" / "tiny.yaml"))
    p.add_argument("--rows", type=int, default=4096, help="rows timed per pass (default 4096)")
    p.add_argument("--repeats", type=int, default=3, help="passes each way, interleaved (default 3)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: all usable cores)")
    p.add_argument("--out", default=str(B.RESULTS / "feature-pass"))
    a = p.parse_args(argv)
    os.environ["LDLM_QUIET"] = "1"
    from ldlm.config import load_config
    from ldlm.data import BatchIterator, load_corpus
    from ldlm.features import compute_features
    from ldlm.frozen_lm import FrozenLM, load_tokenizer

    threads = B.set_threads(a.threads)
    cfg = load_config(a.config)
    corpus = load_corpus(cfg.data, load_tokenizer(cfg.model.lm), cfg.model.lm)
    read = BatchIterator(len(corpus.train), cfg.train.batch_size, cfg.train.seed).rows_within(cfg.train.steps)
    rows = read[torch.linspace(0, len(read) - 1, min(a.rows, len(read))).long()]
    ids, mask = corpus.train.ids[rows], corpus.train.mask[rows]
    lm = FrozenLM(cfg.model.lm, cfg.model.lm_layer)
    times: dict[str, list[float]] = {"full rows": [], "pad_zero": []}
    out = {}
    for _ in range(a.repeats):
        for name in times:
            t = time.perf_counter()
            out[name] = compute_features(lm, ids, mask, pad_zero=name == "pad_zero").float()
            times[name].append(time.perf_counter() - t)
            B.log(f"{name}: {times[name][-1]:.1f} s")
    diff = (out["full rows"][mask] - out["pad_zero"][mask]).abs().max().item()
    res = {"machine": B.machine_info("cpu"), "threads": threads, "config": a.config, "rows": len(rows),
           "rows_read_by_the_demo": len(read), "real_token_share": float(mask.float().mean()),
           "seconds": {k: B.summary(v) for k, v in times.items()}, "raw_seconds": times,
           "max_abs_diff_real_positions": diff}
    B.write_report(Path(a.out), "feature_pass", res, markdown(res))
    return res


def markdown(res: dict) -> str:
    m, s = res["machine"], res["seconds"]
    full, cut = s["full rows"]["median"], s["pad_zero"]["median"]
    per = res["rows_read_by_the_demo"] / res["rows"]
    lines = [f"Machine: {B.describe_machine(m)}; {m['date']}, commit {m['commit']}.", "",
             f"Command: `{m['command']}`", "",
             f"{res['rows']:,} of the {res['rows_read_by_the_demo']:,} training rows the demo reads (real tokens "
             f"{res['real_token_share']:.1%} of the positions), {res['threads']} threads, the two ways interleaved:", "",
             "| pass | median | IQR | runs | scaled to the demo's rows |", "|---|---|---|---|---|"]
    for k, v in s.items():
        lines.append(f"| {k} | {v['median']:.1f} s | {v['q1']:.1f}–{v['q3']:.1f} | {v['n']} | {v['median'] * per:.0f} s |")
    lines += ["", f"pad_zero takes {cut / full:.2f}x the full pass's time; real positions differ by at most "
              f"{res['max_abs_diff_real_positions']:.2e} (fp16 storage)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
