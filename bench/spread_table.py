"""Side-by-side table of `ldlm frontier` sweeps made at several sampling seeds (their "seed_spread").

    .venv/bin/python bench/spread_table.py base=bench/results/diff-repeats/base-seed0/frontier.json \
        v=bench/results/v-pred-s16/v-seed0/frontier.json

Each row is one sampling setting (label) the sweeps share; each sweep's cells are the mean ± sample std over its
seeds of gen-PPL, entropy and MAUVE, and the mean set distinct-2. Prints markdown.

With --stack, every setting of every sweep gets its own row instead (sweeps whose settings differ, e.g. a new knob
against the reference), with the first-K-words MAUVE (`mauve_prefix`) where a sweep has it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def spread(path: Path) -> dict[str, dict]:
    """label -> that setting's seed spread, from an `ldlm frontier` frontier.json."""
    res = json.loads(Path(path).read_text(encoding="utf-8"))
    if not res.get("seed_spread"):
        raise SystemExit(f"{path} has no seed_spread: sweep it with --sample-seed 0,1,... (two seeds or more)")
    return {r["label"]: r for r in res["seed_spread"]}


def cell(r: dict | None) -> list[str]:
    if r is None:
        return ["", "", "", ""]
    return [f"{r['gen_ppl']['mean']:.1f} ± {r['gen_ppl']['std']:.1f}", f"{r['entropy']['mean']:.3f}",
            f"{r['mauve']['mean']:.3f} ± {r['mauve']['std']:.3f}", f"{r['distinct2_set']['mean']:.3f}"]


def table(sweeps: dict[str, dict[str, dict]]) -> str:
    labels = [lab for lab in next(iter(sweeps.values())) if all(lab in s for s in sweeps.values())]
    head = ["setting"] + [f"{name}: {m}" for name in sweeps for m in ("gen-PPL", "entropy", "MAUVE", "distinct-2")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for lab in labels:
        lines.append("| " + " | ".join([lab] + [c for s in sweeps.values() for c in cell(s[lab])]) + " |")
    return "\n".join(lines)


def stacked(sweeps: dict[str, dict[str, dict]]) -> str:
    """One row per (sweep, setting), in the order given."""
    lines = ["| sweep | setting | gen-PPL | entropy | MAUVE | MAUVE, first K words | distinct-2 |", "|" + "---|" * 7]
    for name, s in sweeps.items():
        for lab, r in s.items():
            pre = r.get("mauve_prefix")
            c = cell(r)
            lines.append(f"| {name} | {lab} | " + " | ".join(c[:3] + [f"{pre['mean']:.3f} ± {pre['std']:.3f}" if pre else ""]
                                                           + c[3:]) + " |")
    return "\n".join(lines)


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweeps", nargs="+", help="NAME=path/to/frontier.json (two or more sampling seeds each)")
    p.add_argument("--stack", action="store_true", help="a row per setting of every sweep, not only shared ones")
    a = p.parse_args(argv)
    sweeps = {}
    for item in a.sweeps:
        name, sep, path = item.partition("=")
        if not sep:
            p.error(f"{item!r}: give NAME=path/to/frontier.json")
        sweeps[name] = spread(Path(path))
    out = stacked(sweeps) if a.stack else table(sweeps)
    print(out)
    return out


if __name__ == "__main__":
    main()
