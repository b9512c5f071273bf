"""One config's training step in fp32, in bf16 autocast, and in bf16 with attention kept in fp32, timed interleaved.

    .venv/bin/python bench/precision_step.py                         # configs/tiny.yaml, 6 rounds x 4 steps
    .venv/bin/python bench/precision_step.py --config configs/small.yaml --rounds 4

One trainer, mid-run (every recipe path active); each round times `--steps` optimizer steps in each mode in
turn, so a neighbour's load on a shared machine falls on every mode alike (timing the modes one after another,
minutes apart, measured the machine as much as the precision). A step changes the weights, so the modes see
slightly different weights; at these step counts that does not move the time. Reports each mode's median
seconds per step and tokens/s. Only meaningful on a CPU with native bf16 (AVX512-BF16/AMX) or a GPU: elsewhere
bf16 is emulated and far slower (bench/bf16_cpu.py). Writes precision-step-<config>.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("LDLM_QUIET", "1")

import benchlib as B  # noqa: E402

MODES = {  # name: (bf16 autocast, attention in fp32 under it)
    "fp32": (False, True),
    "bf16, attention bf16": (True, False),
    "bf16, attention fp32": (True, True),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(B.ROOT / "configs" / "tiny.yaml"))
    p.add_argument("--rounds", type=int, default=6, help="rounds; each times every mode once")
    p.add_argument("--steps", type=int, default=4, help="timed steps per mode per round")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", default=str(B.RESULTS))
    return p.parse_args(argv)


def main(argv=None) -> dict:
    a = parse_args(argv)
    B.set_threads(a.threads)
    device = B.pick_device(a.device)
    import ldlm.blocks as blocks
    from ldlm.config import load_config
    from ldlm.trainer import Trainer

    cfg = load_config(a.config, ["train.steps=1000", "train.eval_every=0", f"train.threads={a.threads}",
                                 f"train.device={device}", *a.set])
    machine = B.machine_info(device)
    times: dict[str, list[float]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory(prefix="precision-") as run:
        tr = Trainer(cfg, Path(run) / "run", quiet=True)
        tr.model.train()
        tr.step = cfg.train.steps // 2
        tr.model.step_logs = False
        for _ in range(2):  # warm-up: allocator, thread pool, both kernels of every mode
            for bf16, attn32 in MODES.values():
                tr.bf16, blocks.CPU_BF16_ATTENTION_IN_FP32 = bf16, attn32
                tr._step()
        for r in range(a.rounds):
            for name, (bf16, attn32) in MODES.items():
                tr.bf16, blocks.CPU_BF16_ATTENTION_IN_FP32 = bf16, attn32
                for _ in range(a.steps):
                    B.sync(device)
                    t0 = time.perf_counter()
                    tr._step()
                    B.sync(device)
                    times[name].append(time.perf_counter() - t0)
                    tr.step += 1
            B.log(f"round {r + 1}/{a.rounds}: " + ", ".join(
                f"{n} {statistics.median(t[-a.steps:]):.3f} s" for n, t in times.items()))
        blocks.CPU_BF16_ATTENTION_IN_FP32 = True
    tokens = tr.global_batch * cfg.data.seq_len
    rows = {n: {"step_s": B.summary(t), "tokens_per_s": tokens / statistics.median(t)} for n, t in times.items()}
    from ldlm.precision import native_bf16

    res = {"benchmark": "precision_step", "config": a.config, "machine": machine, "native_bf16": native_bf16(device),
           "rounds": a.rounds,
           "steps": a.steps, "batch": tr.global_batch, "seq_len": cfg.data.seq_len, "modes": rows}
    name = f"precision-step-{Path(a.config).stem}"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    B.write_json(out / f"{name}.json", res)
    base = rows["fp32"]["tokens_per_s"]
    lines = [f"# Training step by precision: `{Path(a.config).name}`", "",
             f"- command: `{machine['command']}`", f"- machine: {B.describe_machine(machine)}; load average at "
             f"start {machine.get('loadavg_1_5_15')}", f"- date: {machine['date']}; commit {machine['commit']}",
             f"- batch {tr.global_batch} × {cfg.data.seq_len} tokens; {a.rounds} interleaved rounds × {a.steps} "
             "steps per mode", ""]
    if not res["native_bf16"]:
        lines += ["- **this device emulates bf16** (no AVX512-BF16/AMX): the trainer runs fp32 here, whatever "
                  "`train.bf16` says; the bf16 rows only show the emulation's cost", ""]
    lines += ["| mode | s/step (median) | IQR | tokens/s | vs fp32 |", "|---|---|---|---|---|"]
    for n, row in rows.items():
        s = row["step_s"]
        lines.append(f"| {n} | {s['median']:.3f} | {s['q1']:.3f}–{s['q3']:.3f} | {row['tokens_per_s']:.0f} | "
                     f"{row['tokens_per_s'] / base:.2f}× |")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    B.log(f"written: {out / (name + '.json')}")
    return res


if __name__ == "__main__":
    main()
