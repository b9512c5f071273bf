"""Markdown tables from the committed results under bench/results/, and the blocks of README.md and
BENCHMARKS.md made of them: a published number is one a script wrote to a committed JSON file.

    .venv/bin/python bench/report.py bench/results/params.json            # print one file's table
    .venv/bin/python bench/report.py --update README.md BENCHMARKS.md     # rewrite every generated block
    .venv/bin/python bench/report.py --check README.md BENCHMARKS.md      # exit 1 if a block differs from its JSON
    .venv/bin/python bench/report.py --collect bench/results/baselines.json \
        LDLM=runs/tiny AR=runs/tiny-ar MDLM=runs/tiny-mdlm                # gather trained runs into a JSON

A generated block in a Markdown file is everything between a marker naming the JSON (and optionally
a view) and the closing marker:

    <!-- report: bench/results/frontier.json table -->
    ...
    <!-- /report -->

Each JSON names what made it ("benchmark"): speed, frontier, ablation (and paper-recipe, levers, shapes-*), params, lr-sweep,
eval-sanity, quality, conditional (the script of that name renders it) or baselines (`--collect`: a run's parameter counts, learning rate, output
vocabulary, training speed and final validation line from its folder, and `ldlm eval`'s metrics from
its eval.json if there is one). Views: `table` (the table alone, no machine/command lines); ablation
`table`; lr-sweep `summary` (the best learning rate of each config); conditional `examples` (the example prompts
and what each model wrote).
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as B  # noqa: E402

BLOCK = re.compile(r"^(<!-- report: (\S+)(?: (\w+))? -->\n)(.*?)^(<!-- /report -->)$", re.S | re.M)


def render(path: str | Path, view: str | None = None) -> str:
    """The Markdown of one results file (see the module doc for views)."""
    p = Path(path)
    if not p.is_absolute() and not p.is_file():
        p = B.ROOT / p
    if not p.is_file():
        sys.exit(f"results file '{path}' not found; run the script that writes it (see BENCHMARKS.md)")
    res = json.loads(p.read_text(encoding="utf-8"))
    kind, header = res.get("benchmark"), view != "table"
    if kind == "speed":
        import speed

        return speed.markdown(res, header=header)
    if kind == "frontier":
        import frontier

        return frontier.markdown(res, header=header)
    if kind in ("ablation", "paper-recipe", "levers") or str(kind).startswith("shapes-"):  # bench/ablation.py's suites
        import ablation

        return "\n".join(ablation.table(res)) + "\n" if view == "table" else ablation.markdown(res)
    if kind == "params":
        import params

        return params.markdown(res, header=header)
    if kind == "lr-sweep":
        import lr_sweep

        return lr_sweep.summary(res) if view == "summary" else lr_sweep.render(res)
    if kind == "baselines":
        return baselines_markdown(res, header=header)
    if kind == "conditional":
        import conditional

        return conditional.examples(res) if view == "examples" else conditional.markdown(res)
    if kind == "eval-sanity":
        import eval_sanity

        return eval_sanity.markdown(res, header=header)
    if kind == "quality":
        import quality

        return quality.markdown(res, header=header)
    sys.exit(f"'{path}' is not a results file this script knows (benchmark={kind!r})")


def update(text: str) -> str:
    """`text` with every generated block re-rendered from its JSON."""
    return BLOCK.sub(lambda m: m.group(1) + render(m.group(2), m.group(3)) + m.group(5), text)


# ---------------------------------------------------------------- baselines
def collect_run(name: str, run: Path) -> dict:
    """What a run folder says about itself: config, parameter counts, training speed, last validation
    line, and `ldlm eval`'s result in <run>/eval.json when there is one."""
    from ldlm.plots import read_events, read_metrics

    if not (run / "config.json").is_file():
        sys.exit(f"'{run}' is not a run folder (no config.json); pass NAME=RUN for trained runs")
    cfg = json.loads((run / "config.json").read_text(encoding="utf-8"))
    start = next((e for e in read_events(run) if e["event"] == "start"), {})
    if not start.get("params"):  # a run made before the start event carried them: count them from its config
        import params
        from ldlm import checkpoint as ck

        counted = params.count(str(run / "config.json"), [], vocab=True, cfg=ck.load_config_of(run))
        start = {**start, "params": {k: counted[k] for k in ("embedding", "non_embedding", "frozen", "trainable")},
                 "output_vocab": counted.get("output_vocab")}
    train, valid = read_metrics(run)
    toks = [r["tok_s"] for r in train if "tok_s" in r]
    row = {"name": name, "run": str(run), "algo": cfg["algo"], "lr": cfg["train"]["lr"],
           "steps": cfg["train"]["steps"], "batch_size": cfg["train"]["batch_size"], "seq_len": cfg["data"]["seq_len"],
           "readout_vocab": cfg["model"].get("readout_vocab"), "params": start.get("params"),
           "output_vocab": start.get("output_vocab"), "device": start.get("device"),
           "train_tok_s_median": statistics.median(toks) if toks else None,
           "train_wall_s": train[-1].get("elapsed") if train else None, "valid": valid[-1] if valid else {}}
    ev = run / "eval.json"
    if ev.is_file():
        e = json.loads(ev.read_text(encoding="utf-8"))
        row["eval"] = {"file": str(ev), "protocol": e.get("protocol"), "samples": e["rows"]["samples"],
                       "evaluator": (e.get("settings") or {}).get("evaluator"),
                       "data": e["rows"].get("data"), "sample_settings": e.get("sample_settings")}
    return row


def validation_cell(r: dict) -> str:
    v = r["valid"]
    if not v:
        return "n/a"
    if r["algo"] == "ar":
        return f"NLL {v['nll']:.2f} (ppl {v['ppl']:.0f})"
    if r["algo"] == "mdlm":
        return f"NELBO ≤ {v['nelbo']:.2f} (ppl ≤ {v['ppl']:.0f})"
    return (f"L_diff {v['diff']:.3f} (trivial {v['diff_trivial']:.3f}), recon {v['recon_acc'] * 100:.0f} %"
            if "diff" in v else "n/a")


def _c(v, fmt: str) -> str:
    return "n/a" if v is None else fmt.format(v)


def baselines_markdown(res: dict, header: bool = True) -> str:
    m = res["machine"]
    lines = [f"Collected by `{m['command']}` ({m['date']}, commit {m['commit']}) from the run folders named "
             "below; tokens/s is the median of the runs' `tok_s` lines (all positions, padding included).", ""] \
        if header else []
    lines += ["| model | run | lr | output vocabulary | params: embedding / non-embedding / frozen | train tokens/s | "
              "train wall | validation | ms/sample |", "|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        p = r.get("params") or {}
        counts = " / ".join(_c(p.get(k), "{:,}") for k in ("embedding", "non_embedding", "frozen"))
        ss = (r.get("eval") or {}).get("sample_settings") or {}
        lines.append(f"| {r['name']} | `{r['run']}` | {r['lr']:g} | {_c(r.get('output_vocab'), '{:,}')} "
                     f"({r['readout_vocab']}) | {counts} | {_c(r['train_tok_s_median'], '{:,.0f}')} | "
                     f"{_c(r['train_wall_s'], '{:.0f} s')} | {validation_cell(r)} | "
                     f"{_c(ss.get('sec_per_sample') and ss['sec_per_sample'] * 1000, '{:.0f}')} |")
    evals = [r for r in res["rows"] if r.get("eval")]
    if evals:
        cols = (("gen_ppl", "{:.1f}"), ("entropy", "{:.3f}"), ("mauve", "{:.3f}"), ("distinct2_set", "{:.3f}"),
                ("distinct3_set", "{:.3f}"), ("rep4", "{:.3f}"), ("mean_words", "{:.1f}"))
        ev0 = evals[0]["eval"]
        lines += ["", B.evaluator_caption(ev0.get("evaluator"), ev0.get("protocol")), "",
                  "| samples | gen-PPL | entropy | MAUVE | distinct-2 (set) | distinct-3 (set) | rep-4 | words |",
                  "|---|---|---|---|---|---|---|---|"]
        data = evals[0]["eval"].get("data")
        if data:
            lines.append("| data (held-out) | " + " | ".join(_c(data.get(k), f) for k, f in cols) + " |")
        for r in evals:
            s = r["eval"]["samples"]
            lines.append(f"| {r['name']} | " + " | ".join(_c(s.get(k), f) for k, f in cols) + " |")
    return "\n".join(lines) + "\n"


def collect(out: Path, specs: list[str], argv: list[str] | None) -> dict:
    rows = []
    for spec in specs:
        if "=" not in spec:
            sys.exit(f"'{spec}' is not NAME=RUN (e.g. LDLM=runs/tiny)")
        name, run = spec.split("=", 1)
        rows.append(collect_run(name, Path(run)))
    res = {"benchmark": "baselines", "machine": B.machine_info("cpu"), "rows": rows}
    if argv is not None:
        res["machine"]["command"] = " ".join(["bench/report.py", *argv])
    B.write_json(out, res)
    out.with_suffix(".md").write_text(baselines_markdown(res), encoding="utf-8")
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", help="results JSON files to print, or Markdown files with --update/--check, "
                   "or NAME=RUN folders with --collect")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--update", action="store_true", help="rewrite the generated blocks of the given Markdown files")
    g.add_argument("--check", action="store_true", help="exit 1 if a generated block differs from its JSON")
    g.add_argument("--collect", metavar="JSON", help="gather the given NAME=RUN folders into this baselines JSON")
    p.add_argument("--view", help="with a JSON path: the view to print (see the module doc)")
    a = p.parse_args(argv)
    if a.collect:
        res = collect(Path(a.collect), a.paths, argv)
        print(baselines_markdown(res))
        return 0
    stale = []
    for path in a.paths:
        if not (a.update or a.check):
            print(render(path, a.view))
            continue
        text = Path(path).read_text(encoding="utf-8")
        new = update(text)
        if new != text:
            stale.append(path)
            if a.update:
                Path(path).write_text(new, encoding="utf-8")
    if a.check and stale:
        print(f"generated blocks differ from their results files in: {', '.join(stale)}; "
              f"run bench/report.py --update {' '.join(stale)}", file=sys.stderr)
        return 1
    if a.update:
        print(f"updated: {', '.join(stale) or 'nothing (already current)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
