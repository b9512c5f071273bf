"""Sample quality at the CPU budget: each trained run's samples beside the data row, checked against
the targets of the demo and `small` configs, with the autoencoder's own ceiling for latent models.

    .venv/bin/python bench/quality.py --run demo=runs/tiny --run ar=runs/tiny-ar --run mdlm=runs/tiny-mdlm \\
        --target demo=demo
    .venv/bin/python bench/quality.py --quick      # smoke test: micro runs, 16 samples

Rows: the data row (held-out references, protocol `ldlm-eval-v1`, one evaluator for every row), then for
each `--run LABEL=RUN` its samples at the run's own sampling settings (its config's `sample` section;
`--steps` overrides the diffusion models' steps) and, for LDLM and TEncDM, a row `LABEL (autoencoder)`:
the references themselves through decode(encode(x)), read out by argmax. Every sample goes through
the same decoder, so that row is what a perfect denoiser could reach; the gap between it and the
samples is the denoiser's, the gap between it and the data row the autoencoder's.

`--target NAME=LABEL` checks a row against the targets NAME ('demo', 'demo-causal' or 'small', below). Rows already in
the output JSON that were made with the same settings and the same checkpoint are kept and not
re-scored, so runs can be added one at a time; `--drop LABEL` removes a kept row (with a `--run` of the same label:
scores it afresh). Each row records the processor that scored it. Writes quality.json and quality.md (default
bench/results).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("LDLM_QUIET", "1")

import benchlib as B  # noqa: E402

# the targets of the demo and small configs: (gen-PPL as a multiple of the data row's, at most; entropy gap
# to the data row, at most; MAUVE, at least; empty samples, at most; distinct samples per 256, at least)
TARGETS = {"demo": {"ppl_ratio": 2.5, "entropy_gap": 0.15, "mauve": 0.6, "empty": 0, "unique_per_256": 250},
           "small": {"ppl_ratio": 1.5, "entropy_gap": 0.1, "mauve": 0.8, "empty": 0, "unique_per_256": 250}}
TARGETS["demo-causal"] = TARGETS["demo"]  # `make demo DEMO=tiny-causal` is held to the demo's targets
SHOW_SAMPLES = 5


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", default=[], metavar="LABEL=RUN", help="a trained run and its row label")
    p.add_argument("--drop", action="append", default=[], metavar="LABEL",
                   help="remove a row kept from an earlier command (and its autoencoder row), e.g. one scored elsewhere")
    p.add_argument("--target", action="append", default=[], metavar="NAME=LABEL",
                   help=f"check row LABEL against target set NAME ({', '.join(TARGETS)})")
    p.add_argument("--quick", action="store_true", help="smoke test: trains micro runs, 16 samples")
    p.add_argument("--num", type=int, help="samples per run and references (default 256; --quick 16)")
    p.add_argument("--steps", type=int, help="diffusion models' sampling steps (default: each run's own)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (and the references' draw)")
    p.add_argument("--config", help="config whose corpus and length give the references (default: the first run's)")
    p.add_argument("--eval-lm", help="evaluator (default smollm2, offline)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", help="output folder (default bench/results; --quick bench/results/quick)")
    a = p.parse_args(argv)
    a.num = a.num or (16 if a.quick else 256)
    a.out = Path(a.out or (B.RESULTS / "quick" if a.quick else B.RESULTS))
    a.runs = dict(_pair(r, "--run") for r in a.run)
    a.targets = dict(_pair(t, "--target") for t in a.target)
    for name, label in a.targets.items():
        if name not in TARGETS:
            sys.exit(f"--target {name}={label}: unknown target set '{name}'; choose from {', '.join(TARGETS)}")
    if not a.runs and not a.quick:
        sys.exit("give at least one --run LABEL=RUN (or --quick)")
    return a


def _pair(s: str, flag: str) -> tuple[str, str]:
    k, sep, v = s.partition("=")
    if not sep or not k or not v:
        sys.exit(f"{flag} {s!r}: expected NAME=VALUE")
    return k, v


def quick_runs(out: Path, threads: int) -> dict:
    """Micro LDLM and AR runs for the smoke test (trained once, then reused)."""
    from ldlm.config import load_config

    runs = {}
    for label, cfg in (("ldlm", "micro.yaml"), ("ar", "micro-ar.yaml")):
        c = load_config(str(B.ROOT / "configs" / cfg), [f"train.threads={threads}"])
        runs[label] = str(B.train_run(c, out / "quality-runs" / label, label))
    return runs


def check(row: dict, data: dict, target: dict) -> dict:
    """Each target: the measured value, the bound and whether it is met (None where unmeasured)."""
    m = row["metrics"]
    n = max(1, m.get("num") or 1)
    got = {"ppl_ratio": m["gen_ppl"] / data["gen_ppl"] if m.get("gen_ppl") and data.get("gen_ppl") else None,
           "entropy_gap": abs(m["entropy"] - data["entropy"]) if m.get("entropy") is not None else None,
           "mauve": m.get("mauve"), "empty": row["empty"],
           "unique_per_256": m["unique_texts"] * 256 / n if m.get("unique_texts") is not None else None}
    out = {}
    for k, bound in target.items():
        v = got[k]
        ok = None if v is None else (v >= bound if k in ("mauve", "unique_per_256") else v <= bound)
        out[k] = {"value": v, "bound": bound, "met": ok}
    return out


def score(label: str, kind: str, texts: list[str], ev, extra: dict) -> dict:
    row = {"label": label, "kind": kind, "metrics": ev.evaluate(texts, desc=f"scoring {label}"),
           "empty": sum(1 for t in texts if not t.strip()), "examples": texts[:SHOW_SAMPLES], **extra}
    m = row["metrics"]
    B.log(f"[{label}] gen-PPL {_f(m.get('gen_ppl'), '{:.1f}')}, entropy {_f(m.get('entropy'), '{:.3f}')}, "
          f"MAUVE {_f(m.get('mauve'), '{:.3f}')}, empty {row['empty']}")
    return row


def run_rows(label: str, run: str, refs: list[str], ev, a) -> list[dict]:
    """The samples row of one run and, for a latent model, its autoencoder row."""
    from ldlm.generate import generate, load_model, reconstruct, write_samples

    model = load_model(run, device=a.device_resolved)
    over = {"num": a.num, "seed": a.seed}
    if a.steps and "steps" in model.sample_keys:
        over["steps"] = a.steps
    t0 = time.time()
    recs = generate(model, **over)
    sample_s = time.time() - t0
    write_samples(recs, Path(run) / "quality-samples.jsonl")
    settings = {k: v for k, v in recs[0].items() if k in model.sample_keys or k == "algo"}
    params = model.param_counts()
    extra = {"run": run, "checkpoint": model.checkpoint, "algo": model.cfg.algo, "sample": settings,
             "sec_per_sample": sample_s / a.num, "params": params, "train_steps": model.cfg.train.steps,
             "batch_size": model.cfg.train.batch_size, "scored_on": a.scored_on, **B.train_stats(Path(run))}
    rows = [score(label, "samples", [r["text"] for r in recs], ev, extra)]
    if hasattr(model, "reconstruct_ids"):
        rec = reconstruct(model, refs)
        rows.append(score(f"{label} (autoencoder)", "autoencoder", rec, ev,
                          {k: extra[k] for k in ("run", "checkpoint", "algo", "valid", "scored_on")}))
    return rows


def _f(v, fmt):
    return "n/a" if v is None else fmt.format(v)


def markdown(res: dict, header: bool = True) -> str:
    """The report: settings, the table, the targets; with `header` also the first samples of each row."""
    d = res["data"]
    lines = []
    if header:
        lines += ["# Sample quality at the CPU budget", "",
                  f"- command: `{res['command']}`" + "".join(f"; rows kept from `{c}`" for c in res.get("earlier_commands", [])),
                  f"- machine: {B.describe_machine(res['machine'])}",
                  f"- date: {res['date']}; commit {res['machine'].get('commit')}",
                  f"- references: {res['eval_settings']['references']}",
                  f"- rows scored on: {scored_on(res['rows'])}", ""]
    lines += [f"{B.evaluator_caption(res['eval_settings'].get('evaluator'), res['protocol'])} "
              f"{res['settings']['num']} samples per row at each run's own sampling settings, seed "
              f"{res['settings']['seed']}; `(autoencoder)` rows: the references through decode(encode(x)), argmax.",
              "",
              "| row | algo | train steps × batch | train min | sampling | gen-PPL | × data | entropy | MAUVE | "
              "distinct-2 (set) | unique | empty | recon acc (val) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
              f"| data (references) | | | | | {_f(d.get('gen_ppl'), '{:.1f}')} | 1.00 | "
              f"{_f(d.get('entropy'), '{:.3f}')} | {_f(d.get('mauve'), '{:.3f}')} | "
              f"{_f(d.get('distinct2_set'), '{:.3f}')} | {d.get('unique_texts')} | | |"]
    for r in ordered(res["rows"]):
        m = r["metrics"]
        ratio = m["gen_ppl"] / d["gen_ppl"] if m.get("gen_ppl") and d.get("gen_ppl") else None
        s = r.get("sample", {})
        samp = ", ".join(f"{k} {v}" for k, v in s.items() if k in ("steps", "noise_scale", "temperature",
                                                                     "decode_temperature", "round_below", "top_p"))
        tm = r.get("train_wall_s")
        budget = f"{r['train_steps']} × {r['batch_size']}" if r.get("train_steps") else ""
        lines.append(f"| {r['label']} | {r['algo']} | {budget} | {_f(tm / 60 if tm else None, '{:.1f}')} | "
                     f"{samp if r['kind'] == 'samples' else 'decode(encode(x))'} | {_f(m.get('gen_ppl'), '{:.1f}')} | "
                     f"{_f(ratio, '{:.2f}')} | {_f(m.get('entropy'), '{:.3f}')} | {_f(m.get('mauve'), '{:.3f}')} | "
                     f"{_f(m.get('distinct2_set'), '{:.3f}')} | {m.get('unique_texts')} | {r['empty']} | "
                     f"{_f(r.get('valid', {}).get('recon_acc'), '{:.3f}')} |")
    for name, (label, chk) in (res.get("checks") or {}).items():
        parts = [f"{k} {_f(v['value'], '{:.3g}')} (target {'≥' if k in ('mauve', 'unique_per_256') else '≤'} "
                 f"{v['bound']}): {'met' if v['met'] else 'not met' if v['met'] is False else 'not measured'}"
                 for k, v in chk.items()]
        met = all(v["met"] for v in chk.values())
        lines += ["", f"Targets **{name}** (row `{label}`): {'all met' if met else 'not all met'} — " + "; ".join(parts)]
    if header:
        lines += ["", "## Samples (the first of each row)", ""]
        for r in ordered(res["rows"]):
            lines += [f"**{r['label']}**", ""]
            lines += [f"> {t.strip() or '(empty)'}" + "  " for t in r["examples"]]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def scored_on(rows: list[dict]) -> str:
    """Which processor scored which rows (the evaluator's machine moves gen-PPL by ~0.5 %: BENCHMARKS §6)."""
    by: dict[str, list[str]] = {}
    for r in ordered(rows):
        if r["kind"] == "samples":
            by.setdefault(r.get("scored_on") or "not recorded (an earlier command)", []).append(r["label"])
    return "; ".join(f"{cpu} ({', '.join(labels)})" for cpu, labels in by.items())


def ordered(rows: list[dict]) -> list[dict]:
    """The rows in file order, each `(autoencoder)` row right after the row of its run."""
    ae = {r["label"]: r for r in rows if r["label"].endswith(" (autoencoder)")}
    out = []
    for r in rows:
        if not r["label"].endswith(" (autoencoder)"):
            out += [r] + ([ae.pop(f"{r['label']} (autoencoder)")] if f"{r['label']} (autoencoder)" in ae else [])
    return out + list(ae.values())  # an autoencoder row whose run's row is gone


def main(argv=None) -> dict:
    a = parse_args(argv)
    B.set_threads(a.threads)
    a.device_resolved = B.pick_device(a.device)
    a.scored_on = B.device_name(a.device_resolved)
    a.out.mkdir(parents=True, exist_ok=True)
    if a.quick and not a.runs:
        a.runs = quick_runs(a.out, a.threads)
    for name, label in a.targets.items():
        if label not in a.runs:
            sys.exit(f"--target {name}={label}: no --run is labelled '{label}'")

    from ldlm import checkpoint as ck
    from ldlm.config import load_config
    from ldlm.evaluation import PROTOCOL, build_references, make_evaluation

    first = next(iter(a.runs.values()))
    base = load_config(a.config) if a.config else ck.load_config_of(ck.resolve_checkpoint(first))
    refs, refs_b, note = build_references("valid", base, a.num, [], a.seed)
    ev = make_evaluation(a.eval_lm, refs, refs_b, note, seed=a.seed, device=a.device_resolved, batch_size=16,
                         threads=a.threads)
    settings = {"num": a.num, "seed": a.seed, "steps": a.steps, "references": note}
    jpath = a.out / "quality.json"
    old_rows = B.kept_rows(jpath, settings, "label")
    # read before the loop below rewrites the file: an earlier command's checks and command line are kept too
    prev = json.loads(jpath.read_text(encoding="utf-8")) if old_rows else {}
    res = {"benchmark": "quality", "protocol": PROTOCOL, "machine": B.machine_info(a.device_resolved),
           "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "settings": settings, "eval_settings": ev.settings,
           "command": "bench/quality.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "targets": TARGETS, "data": ev.data_row(), "rows": []}
    rows = dict(old_rows)
    for label in a.drop:  # gone from the file; with a --run of the same label, scored afresh
        if rows.pop(label, None) is None:
            sys.exit(f"--drop {label}: no such row in {jpath}")
        rows.pop(f"{label} (autoencoder)", None)
        old_rows.pop(label)
    for label, run in a.runs.items():
        cached = old_rows.get(label)
        if cached and cached.get("checkpoint") == str(ck.resolve_checkpoint(run)):
            B.log(f"[{label}] kept from {jpath} (same checkpoint and settings)")
            continue
        rows.pop(f"{label} (autoencoder)", None)
        for r in run_rows(label, run, refs, ev, a):
            rows[r["label"]] = r
        res["rows"] = list(rows.values())
        B.write_json(jpath, res)
    res["rows"] = list(rows.values())
    res["checks"] = {name: (label, c) for name, (label, c) in prev.get("checks", {}).items() if label in rows}
    res["checks"].update({name: (label, check(rows[label], res["data"], TARGETS[name]))
                          for name, label in a.targets.items()})
    res["earlier_commands"] = [c for c in [*prev.get("earlier_commands", []), prev.get("command")] if c]
    B.write_json(jpath, res)
    (a.out / "quality.md").write_text(markdown(res), encoding="utf-8")
    B.log(f"written: {jpath}, {a.out / 'quality.md'}")
    return res


if __name__ == "__main__":
    main()
