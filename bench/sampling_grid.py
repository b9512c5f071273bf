"""The sampling time grid at few steps: uniform in t against uniform in log-SNR, on one checkpoint.

    .venv/bin/python bench/sampling_grid.py --ckpt runs/paper-recipe/old-defaults --steps 5,10,25

Samples --num texts per (grid, steps) with the same seed, scores them with `ldlm eval`'s protocol (one
evaluator, the checkpoint's validation split as references) and writes bench/results/sampling-grid.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("LDLM_QUIET", "1")

import benchlib as B  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--steps", default="5,10,25")
    p.add_argument("--grids", default="uniform,logsnr")
    p.add_argument("--num", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-lm")
    p.add_argument("--out", default=str(B.RESULTS / "sampling-grid"))
    a = p.parse_args(argv)
    B.set_threads(a.threads)
    from ldlm.evaluation import PROTOCOL, build_references, make_evaluation
    from ldlm.generate import generate, load_model

    model = load_model(a.ckpt, device="cpu")
    refs, refs_b, note = build_references("valid", model.cfg, a.num, [], 0)
    ev = make_evaluation(a.eval_lm, refs, refs_b, note, seed=0, device="cpu", batch_size=16, threads=a.threads)
    res = {"benchmark": "sampling-grid", "protocol": PROTOCOL, "machine": B.machine_info("cpu"),
           "checkpoint": model.checkpoint, "num": a.num, "seed": a.seed, "data": ev.data_row(), "rows": []}
    for steps in [int(s) for s in a.steps.split(",")]:
        for grid in a.grids.split(","):
            t0 = time.time()
            recs = generate(model, num=a.num, steps=steps, grid=grid, seed=a.seed)
            row = {"grid": grid, "steps": steps, "sample_s": time.time() - t0,
                   "metrics": ev.evaluate([r["text"] for r in recs], desc=f"{grid} {steps}")}
            res["rows"].append(row)
            m = row["metrics"]
            B.log(f"[{grid} {steps}] gen-PPL {m.get('gen_ppl'):.1f} entropy {m.get('entropy'):.3f} MAUVE {m.get('mauve')}")
            B.write_json(Path(a.out + ".json"), res)
    lines = ["# Sampling time grid: uniform in t against uniform in log-SNR", "",
             f"- command: `{res['machine']['command']}`", f"- machine: {B.describe_machine(res['machine'])}",
             f"- checkpoint: `{res['checkpoint']}`; {a.num} samples per row, sampling seed {a.seed}, SDE solver, "
             f"noise scale 1; protocol {PROTOCOL}", "",
             "| grid | steps | gen-PPL | entropy | MAUVE | distinct-2 (set) |", "|---|---|---|---|---|---|"]
    d = res["data"]
    lines.append(f"| data | | {d.get('gen_ppl', 0):.1f} | {d.get('entropy', 0):.3f} | {d.get('mauve') or 0:.3f} | "
                 f"{d.get('distinct2_set', 0):.3f} |")
    for r in res["rows"]:
        m = r["metrics"]
        lines.append(f"| {r['grid']} | {r['steps']} | {m.get('gen_ppl', 0):.1f} | {m.get('entropy', 0):.3f} | "
                     f"{m.get('mauve') or 0:.3f} | {m.get('distinct2_set', 0):.3f} |")
    Path(a.out + ".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return res


if __name__ == "__main__":
    main()
