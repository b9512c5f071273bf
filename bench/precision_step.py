"""Training-step and attention-kernel times in fp32 and bf16 on CPU (or GPU), the modes timed interleaved.

    .venv/bin/python bench/precision_step.py                          # tiny's training step, 6 rounds x 4 steps
    .venv/bin/python bench/precision_step.py --config configs/tiny-ar.yaml --rounds 8
    .venv/bin/python bench/precision_step.py --part attention         # SDPA alone at tiny's attention shape

`--part train`: one trainer's `_step` mid-run (every recipe path active), on the config's batch, in fp32, in bf16
autocast with bf16 attention, and in bf16 autocast with attention in fp32 (`ldlm.precision.sdpa`, the library's
default on CPU). Training steps change the weights, so the modes see slightly different weights; that does not move
the time. `--part attention`: `scaled_dot_product_attention` alone on random [batch, heads, seq_len, head_dim]
inputs of the config's shape, forward only and forward + backward, fp32 and bf16 -- which of the two passes is
slow in bf16.

Each round runs `--steps` units of each mode in turn, so a neighbour's load on a shared machine falls on every mode
alike (timing the modes one after another, minutes apart, measured the machine as much as the precision). Reports
each mode's median seconds and tokens/s, and its speed against the same pass in fp32. Only meaningful on a CPU with
AVX512-BF16 or AMX or on a GPU: elsewhere bf16 is emulated and far slower (bench/bf16_cpu.py). Writes
precision-<part>-<config>.{json,md}.
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

MODES = {  # --part train: name -> (bf16 autocast, attention in fp32 under it)
    "fp32": (False, True),
    "bf16, attention bf16": (True, False),
    "bf16, attention fp32": (True, True),
}
PARTS = {"train": "training step", "attention": "attention kernel"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", default="train", choices=list(PARTS))
    p.add_argument("--config", default=str(B.ROOT / "configs" / "tiny.yaml"))
    p.add_argument("--rounds", type=int, default=6, help="rounds; each times every mode once")
    p.add_argument("--steps", type=int, default=4, help="timed units per mode per round")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", default=str(B.RESULTS))
    return p.parse_args(argv)


def units(a, cfg, device, run: Path):
    """({mode: fn running one timed unit}, sequences per unit, tokens per sequence) for `a.part`."""
    import torch

    import ldlm.precision as precision

    if a.part == "train":
        from ldlm.trainer import Trainer
        from speed import mid_run

        tr = Trainer(cfg, run, quiet=True)
        mid_run(tr)

        def step(bf16, attn32):
            tr.bf16, precision.CPU_BF16_ATTENTION_IN_FP32 = bf16, attn32
            tr._step()
            tr.step += 1
        fns = {name: (lambda m=m: step(*m)) for name, m in MODES.items()}
        return fns, tr.global_batch, cfg.data.seq_len
    m = cfg.model
    shape = (cfg.train.batch_size, m.heads, cfg.data.seq_len, m.den_width // m.heads)
    g = torch.Generator().manual_seed(0)
    fns = {}
    for dtype, label in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        qkv = [torch.randn(*shape, generator=g).to(device, dtype).requires_grad_() for _ in range(3)]

        @torch.no_grad()
        def forward(qkv=qkv):
            torch.nn.functional.scaled_dot_product_attention(*qkv)

        def forward_backward(qkv=qkv):
            torch.nn.functional.scaled_dot_product_attention(*qkv).float().sum().backward()
        fns[f"forward {label}"], fns[f"forward+backward {label}"] = forward, forward_backward
    order = ["forward fp32", "forward bf16", "forward+backward fp32", "forward+backward bf16"]
    return {k: fns[k] for k in order}, shape[0], shape[2]


def main(argv=None) -> dict:
    a = parse_args(argv)
    B.set_threads(a.threads)
    device = B.pick_device(a.device)
    import ldlm.precision as precision
    from ldlm.config import load_config

    cfg = load_config(a.config, ["train.steps=1000", "train.eval_every=0", f"train.threads={a.threads}",
                                 f"train.device={device}", *a.set])
    machine = B.machine_info(device)
    times: dict[str, list[float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="precision-") as run:
            fns, batch, length = units(a, cfg, device, Path(run) / "run")
            times = {name: [] for name in fns}
            for _ in range(2):  # warm-up: allocator, thread pool, the kernels of every mode
                for fn in fns.values():
                    fn()
            for r in range(a.rounds):
                for name, fn in fns.items():
                    for _ in range(a.steps):
                        B.sync(device)
                        t0 = time.perf_counter()
                        fn()
                        B.sync(device)
                        times[name].append(time.perf_counter() - t0)
                B.log(f"round {r + 1}/{a.rounds}: " + ", ".join(
                    f"{n} {statistics.median(t[-a.steps:]):.3f} s" for n, t in times.items()))
    finally:
        precision.CPU_BF16_ATTENTION_IN_FP32 = True
    tokens = batch * length
    rows = {n: {"step_s": B.summary(t), "tokens_per_s": tokens / statistics.median(t)} for n, t in times.items()}
    res = {"benchmark": "precision_step", "part": a.part, "config": a.config, "machine": machine,
           "native_bf16": precision.native_bf16(device), "rounds": a.rounds, "steps": a.steps, "batch": batch,
           "seq_len": length, "modes": rows}
    name = f"precision-{a.part}-{Path(a.config).stem}"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    B.write_json(out / f"{name}.json", res)
    first = next(iter(rows.values()))
    lines = [f"# {PARTS[a.part].capitalize()} by precision: `{Path(a.config).name}`", "",
             f"- command: `{machine['command']}`", f"- machine: {B.describe_machine(machine)}; load average at "
             f"start {machine.get('loadavg_1_5_15')}", f"- date: {machine['date']}; commit {machine['commit']}",
             f"- {batch} × {length} tokens a unit; {a.rounds} interleaved rounds × {a.steps} units per mode", ""]
    if not res["native_bf16"]:
        lines += ["- **ldlm runs fp32 on this device** (no AMX: bf16 emulated, or AVX512-BF16 alone, which measured "
                  "slower than fp32), whatever `train.bf16` says; the bf16 rows show what bf16 would cost", ""]
    lines += ["| mode | s/unit (median) | IQR | tokens/s | vs the same pass in fp32 |", "|---|---|---|---|---|"]
    for n, row in rows.items():
        s = row["step_s"]
        lines.append(f"| {n} | {s['median']:.4f} | {s['q1']:.4f}–{s['q3']:.4f} | {row['tokens_per_s']:.0f} | "
                     f"{row['tokens_per_s'] / rows.get(n.replace('bf16', 'fp32'), first)['tokens_per_s']:.2f}× |")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    B.log(f"written: {out / (name + '.json')}")
    return res


if __name__ == "__main__":
    main()
