"""Training throughput: the whole training loop against its bare optimizer step, on the same trainer.

    .venv/bin/python bench/throughput.py                           # configs/tiny.yaml, 100 loop steps
    .venv/bin/python bench/throughput.py --config configs/tiny-ar.yaml --steps 60
    .venv/bin/python bench/throughput.py --quick                   # micro config, seconds

The loop (`Trainer.train`: batches, the step, EMA, logging, the timestep sampler's refits, checkpoints,
no validation passes) reports tokens/s per log interval in metrics.jsonl; the bare step is
`Trainer._step` alone, timed by bench/speed.py's `measure_training` on the same trainer afterwards
(mid-run: every recipe path active). Their ratio is what the loop around the step costs. The first
log interval (allocator and thread-pool warm-up) is left out of the loop's median. Run it on an idle
machine: both numbers are wall-clock. Writes throughput-<config>.{json,md} (default bench/results).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("LDLM_QUIET", "1")

import benchlib as B  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="config to train (default configs/tiny.yaml; --quick configs/micro.yaml)")
    p.add_argument("--steps", type=int, help="loop steps (default 100; --quick 20)")
    p.add_argument("--log-every", type=int, help="steps per log interval (default 10; --quick 5)")
    p.add_argument("--bare-steps", type=int, default=10, help="timed bare steps after the loop")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", help="output folder (default bench/results; --quick bench/results/quick)")
    a = p.parse_args(argv)
    a.config = a.config or str(B.ROOT / "configs" / ("micro.yaml" if a.quick else "tiny.yaml"))
    a.steps = a.steps or (20 if a.quick else 100)
    a.log_every = a.log_every or (5 if a.quick else 10)
    a.out = Path(a.out or (B.RESULTS / "quick" if a.quick else B.RESULTS))
    return a


def markdown(res: dict) -> str:
    m, r = res["machine"], res
    return "\n".join([
        f"# Training throughput: `{Path(res['config']).name}`", "",
        f"- command: `{m['command']}`", f"- machine: {B.describe_machine(m)}; load average at start "
        f"{m.get('loadavg_1_5_15')}", f"- date: {m['date']}; commit {m['commit']}",
        f"- batch {r['batch']} × {r['seq_len']} tokens, bf16 {r['bf16']}; loop: {r['steps']} steps, log every "
        f"{r['log_every']} (first interval left out); bare: {r['bare']['step_s']['n']} timed steps", "",
        "| measured | tokens/s (median) | range |", "|---|---|---|",
        f"| training loop (metrics.jsonl) | {r['loop_tok_s']:.0f} | {min(r['loop_intervals']):.0f}–"
        f"{max(r['loop_intervals']):.0f} |",
        f"| bare step (`Trainer._step`) | {r['bare']['tokens_per_s']:.0f} | "
        f"{r['bare']['tokens_per_s_iqr'][0]:.0f}–{r['bare']['tokens_per_s_iqr'][1]:.0f} (IQR) |", "",
        f"The loop runs at **{r['loop_over_bare']:.0%}** of the bare step's speed.", ""])


def main(argv=None) -> dict:
    a = parse_args(argv)
    B.set_threads(a.threads)
    device = B.pick_device(a.device)
    a.out.mkdir(parents=True, exist_ok=True)
    from ldlm.config import load_config
    from ldlm.plots import read_metrics
    from ldlm.trainer import Trainer
    from speed import measure_training

    over = [f"train.steps={a.steps}", "train.eval_every=0", f"train.save_every={a.steps}",
            f"train.log_every={a.log_every}", f"train.threads={a.threads}", f"train.device={device}", *a.set]
    cfg = load_config(a.config, over)
    machine = B.machine_info(device)
    with tempfile.TemporaryDirectory(prefix="throughput-") as run:
        tr = Trainer(cfg, run, quiet=True)
        tr.train()
        train, _ = read_metrics(Path(run))
        intervals = [r["tok_s"] for r in train if "tok_s" in r]
        if len(intervals) < 2:
            sys.exit(f"only {len(intervals)} log interval(s); raise --steps or lower --log-every")
        bare = measure_training(cfg.algo, tr, {"train_warmup": 1, "train_steps": a.bare_steps}, device)
    loop = statistics.median(intervals[1:])
    # bf16: what ran (train.bf16 on a CPU that emulates bf16 runs fp32), not what the config asked for
    res = {"benchmark": "throughput", "config": a.config, "machine": machine, "steps": a.steps,
           "log_every": a.log_every, "batch": tr.global_batch, "seq_len": cfg.data.seq_len, "bf16": tr.bf16,
           "loop_intervals": intervals[1:], "loop_tok_s": loop, "bare": bare,
           "loop_over_bare": loop / bare["tokens_per_s"]}
    name = f"throughput-{Path(a.config).stem}"
    B.write_json(a.out / f"{name}.json", res)
    (a.out / f"{name}.md").write_text(markdown(res), encoding="utf-8")
    B.log(f"loop {loop:.0f} tok/s, bare step {bare['tokens_per_s']:.0f} tok/s ({res['loop_over_bare']:.0%}); "
          f"written: {a.out / (name + '.json')}")
    return res


if __name__ == "__main__":
    main()
