"""A step in fp32, in bf16 autocast, and in bf16 with attention kept in fp32, the three timed interleaved.

    .venv/bin/python bench/precision_step.py                          # tiny's training step, 6 rounds x 4 steps
    .venv/bin/python bench/precision_step.py --config configs/tiny-ar.yaml --rounds 8
    .venv/bin/python bench/precision_step.py --part features          # the frozen LM's feature pass (one batch)
    .venv/bin/python bench/precision_step.py --part eval              # the evaluator LM's forward (one batch)

`--part train`: one trainer's `_step`, mid-run (every recipe path active), on the config's batch. `--part
features`: the config's frozen LM on `--batch` (default 128, the feature pass's) passages of the config's length.
`--part eval`: the offline evaluator (SmolLM2) on `--batch` (default 16, `ldlm eval`'s) texts of `--eval-len` (64)
tokens. Inputs of the last two are random token ids: the time does not depend on which tokens they are.

Each round runs `--steps` units of each mode in turn, so a neighbour's load on a shared machine falls on every mode
alike (timing the modes one after another, minutes apart, measured the machine as much as the precision). Training
steps change the weights, so the modes see slightly different weights; that does not move the time. Reports each
mode's median seconds and tokens/s. Only meaningful on a CPU with native bf16 (AVX512-BF16/AMX) or a GPU: elsewhere
bf16 is emulated and far slower (bench/bf16_cpu.py). Writes precision-<part>-<config>.{json,md}.
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
PARTS = {"train": "training step", "features": "frozen LM feature pass", "eval": "evaluator forward"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", default="train", choices=list(PARTS))
    p.add_argument("--config", default=str(B.ROOT / "configs" / "tiny.yaml"))
    p.add_argument("--rounds", type=int, default=6, help="rounds; each times every mode once")
    p.add_argument("--steps", type=int, default=4, help="timed units per mode per round")
    p.add_argument("--batch", type=int, help="sequences per unit (features 128, eval 16; train: the config's)")
    p.add_argument("--eval-len", type=int, default=64, help="tokens per text (--part eval)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", default=str(B.RESULTS))
    return p.parse_args(argv)


def unit(a, cfg, device, run: Path):
    """(fn(bf16) running one timed unit, sequences per unit, tokens per sequence) for `a.part`."""
    import torch

    from ldlm.precision import autocast

    if a.part == "train":
        from ldlm.trainer import Trainer

        tr = Trainer(cfg, run, quiet=True)
        tr.model.train()
        tr.step = cfg.train.steps // 2
        tr.model.step_logs = False

        def step(bf16):
            tr.bf16 = bf16
            tr._step()
            tr.step += 1
        return step, tr.global_batch, cfg.data.seq_len
    g = torch.Generator().manual_seed(0)
    if a.part == "features":
        from ldlm.frozen_lm import FrozenLM

        lm, n, length = FrozenLM(cfg.model.lm, cfg.model.lm_layer).to(device), a.batch or 128, cfg.data.seq_len
        vocab = lm.lm.config.vocab_size
        forward = lm.raw_features
    else:
        from ldlm.evaluator import load_evaluator

        ev, n, length = load_evaluator(device=device), a.batch or 16, a.eval_len
        vocab = ev.model.config.vocab_size
        forward = (lambda x, m: ev.model(input_ids=x, attention_mask=m).logits)
    ids = torch.randint(1000, vocab, (n, length), generator=g).to(device)
    mask = torch.ones(n, length, dtype=torch.long, device=device)

    @torch.no_grad()
    def run_once(bf16):
        with autocast(device, bf16):
            forward(ids, mask)
    return run_once, n, length


def main(argv=None) -> dict:
    a = parse_args(argv)
    B.set_threads(a.threads)
    device = B.pick_device(a.device)
    import ldlm.precision as precision
    from ldlm.config import load_config

    cfg = load_config(a.config, ["train.steps=1000", "train.eval_every=0", f"train.threads={a.threads}",
                                 f"train.device={device}", *a.set])
    machine = B.machine_info(device)
    times: dict[str, list[float]] = {m: [] for m in MODES}
    try:
        with tempfile.TemporaryDirectory(prefix="precision-") as run:
            fn, batch, length = unit(a, cfg, device, Path(run) / "run")
            for _ in range(2):  # warm-up: allocator, thread pool, the kernels of every mode
                for bf16, attn32 in MODES.values():
                    precision.CPU_BF16_ATTENTION_IN_FP32 = attn32
                    fn(bf16)
            for r in range(a.rounds):
                for name, (bf16, attn32) in MODES.items():
                    precision.CPU_BF16_ATTENTION_IN_FP32 = attn32
                    for _ in range(a.steps):
                        B.sync(device)
                        t0 = time.perf_counter()
                        fn(bf16)
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
    base = rows["fp32"]["tokens_per_s"]
    lines = [f"# {PARTS[a.part].capitalize()} by precision: `{Path(a.config).name}`", "",
             f"- command: `{machine['command']}`", f"- machine: {B.describe_machine(machine)}; load average at "
             f"start {machine.get('loadavg_1_5_15')}", f"- date: {machine['date']}; commit {machine['commit']}",
             f"- {batch} × {length} tokens a unit; {a.rounds} interleaved rounds × {a.steps} units per mode", ""]
    if not res["native_bf16"]:
        lines += ["- **this device emulates bf16** (no AVX512-BF16/AMX): ldlm runs fp32 here, whatever "
                  "`train.bf16` says; the bf16 rows only show the emulation's cost", ""]
    lines += ["| mode | s/unit (median) | IQR | tokens/s | vs fp32 |", "|---|---|---|---|---|"]
    for n, row in rows.items():
        s = row["step_s"]
        lines.append(f"| {n} | {s['median']:.3f} | {s['q1']:.3f}–{s['q3']:.3f} | {row['tokens_per_s']:.0f} | "
                     f"{row['tokens_per_s'] / base:.2f}× |")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    B.log(f"written: {out / (name + '.json')}")
    return res


if __name__ == "__main__":
    main()
