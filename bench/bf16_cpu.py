"""fp32 against bf16 (and fp16) matrix products on this CPU: does bf16 autocast pay here?

    .venv/bin/python bench/bf16_cpu.py --out bench/results/bf16-cpu

Times an n x n x n product in each dtype on 1 thread and on all usable cores, and writes
bf16-cpu.json / .md with the machine, whether ldlm.precision.native_bf16 says bf16 pays on the CPU,
and GFLOP/s. On a CPU without AVX512-BF16 or AMX, torch emulates bf16 products; with AVX512-BF16 alone
they measured slower than fp32 too (bench/results/precision-step-s24/): train.bf16, the feature pass and
the evaluator fall back to fp32 on any CPU without AMX (src/ldlm/precision.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import torch  # noqa: E402

import benchlib as B  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def gflops(n: int, dtype: torch.dtype, repeats: int) -> dict:
    a = torch.randn(n, n).to(dtype)
    times = B.time_runs(lambda: a @ a, "cpu", warmup=1, repeats=repeats, max_time=20.0)
    s = B.summary(times)
    return {"median_s": s["median"], "gflops": 2 * n ** 3 / s["median"] / 1e9, "runs": s["n"]}


def main(argv=None) -> dict:
    from ldlm.precision import native_bf16

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=512, help="matrix side (default 512)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(B.RESULTS / "bf16-cpu"))
    a = p.parse_args(argv)
    usable = B.machine_info("cpu")["cpus_usable"]
    rows = []
    for threads in sorted({1, usable}):
        B.set_threads(threads)
        for name, dt in DTYPES.items():
            r = gflops(a.n, dt, a.repeats)
            rows.append({"threads": threads, "dtype": name, **r})
            B.log(f"{threads} thread(s) {name}: {r['gflops']:.1f} GFLOP/s")
    res = {"machine": B.machine_info("cpu"), "native_bf16": native_bf16("cpu"), "n": a.n, "rows": rows}
    out = Path(a.out)
    B.write_json(out / "bf16-cpu.json", res)
    m = res["machine"]
    lines = [f"Machine: {B.describe_machine(m)}; {m['date']}, commit {m['commit']}.", "",
             f"Command: `{m['command']}`", "",
             f"`ldlm.precision.native_bf16('cpu')`: {res['native_bf16']} (bf16 autocast in training and the feature "
             f"pass {'on' if res['native_bf16'] else 'off: fp32'}).", "",
             f"| threads | dtype | GFLOP/s ({a.n}³ product, median) | vs fp32 |", "|---|---|---|---|"]
    for r in rows:
        base = next(x["gflops"] for x in rows if x["threads"] == r["threads"] and x["dtype"] == "fp32")
        lines.append(f"| {r['threads']} | {r['dtype']} | {r['gflops']:.1f} | {r['gflops'] / base:.2f}x |")
    (out / "bf16-cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return res


if __name__ == "__main__":
    main()
