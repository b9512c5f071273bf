"""Whole-text and first-K-words MAUVE of sweeps' sample files, mean ± std over their sampling seeds.

    .venv/bin/python bench/results/mauve-endings-s18/prefix_sweep.py OUT.json NAME=DIR [NAME=DIR ...]

Every `samples-*_seed<N>.jsonl` in each DIR (a `ldlm frontier --sample-seed ...` output folder) is scored with
`ldlm eval`'s protocol against `--reference valid` of configs/tiny.yaml (set A, seed 0; the sweeps' own
references) and `--mauve-prefix-words 20`; files that differ only in the seed are one setting.
"""
import json
import re
import statistics
import sys
from pathlib import Path

from ldlm.config import load_config
from ldlm.evaluation import build_references, make_evaluation

METRICS = ("gen_ppl", "entropy", "mauve", "mauve_prefix", "distinct2_set")


def main(out, named):
    cfg = load_config("configs/tiny.yaml")
    a, b, note = build_references("valid", cfg, 256, [], 0)
    ev = make_evaluation("smollm2", a, b, note, prefix_words=20)
    data = ev.data_row()
    result = {"settings": ev.settings, "data": {m: data.get(m) for m in METRICS}, "rows": []}
    print("data", json.dumps(result["data"]), flush=True)
    for spec in named:
        name, d = spec.split("=", 1)
        for f in sorted(Path(d).glob("samples-*_seed*.jsonl")):
            setting = re.sub(r"_seed\d+$", "", f.stem[len("samples-"):])
            texts = [json.loads(line)["text"] for line in open(f)]
            row = ev.evaluate(texts, f"{name} {f.stem}")
            r = {"name": name, "setting": setting, "file": f.name, **{m: row.get(m) for m in METRICS}}
            result["rows"].append(r)
            print(json.dumps(r), flush=True)
    groups = {}
    for r in result["rows"]:
        groups.setdefault((r["name"], r["setting"]), []).append(r)
    result["spread"] = [{"name": n, "setting": s, "draws": len(rs),
                         **{m: [statistics.fmean(x[m] for x in rs), statistics.stdev(x[m] for x in rs)]
                            for m in METRICS}} for (n, s), rs in groups.items()]
    Path(out).write_text(json.dumps(result, indent=1) + "\n")
    for g in result["spread"]:
        print(f"| {g['name']} | {g['setting']} | " + " | ".join(f"{g[m][0]:.3f} ± {g[m][1]:.3f}" for m in METRICS) + " |")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
