"""Quality-diversity frontiers of LDLM, MDLM and AR in one plot, and the headline speed ratio.

    .venv/bin/python bench/frontier.py --ldlm runs/tiny --mdlm runs/tiny-mdlm --ar runs/tiny-ar
    .venv/bin/python bench/frontier.py --quick          # smoke test: trains three micro runs first
    .venv/bin/python bench/frontier.py --replot         # re-render frontier.png from frontier.json

Each model is swept over its own knob (LDLM: noise scale x steps; MDLM: temperature x steps; AR:
temperature and top-p), every point scored with the same evaluator and references (`ldlm eval`'s
protocol: gen-PPL, entropy, MAUVE, distinct-n; the evaluator is loaded once), plus the data row.

Headline: LDLM's best setting = the lowest gen-PPL among its points whose entropy is at least the
data's minus --entropy-tol (gen-PPL alone is gamed by repetition). MDLM's cost for the same
quality: along each temperature's steps axis, the first crossing of that gen-PPL (interpolated in
log gen-PPL vs log steps), kept only if the entropy there is within --entropy-tol of LDLM's; the
cheapest such crossing wins. Both are then timed again, interleaved, --timing-repeats times
(MDLM at the crossing's steps rounded up); ratio = MDLM time / LDLM time, median and min-max over
the repeats. If MDLM never reaches it, the JSON and the output say so (and give a lower bound).

The converse match is always reported too ("at_mdlm_best"): MDLM's best gen-PPL by the same rule,
charged at MDLM's cheapest point within --ppl-tol of it (its quality is often flat in steps), and the
fastest LDLM point at least as good (gen-PPL no higher, entropy no more than --entropy-tol lower), both
retimed the same way. When MDLM is the weaker model this is the defined speed ratio at matched quality.

Writes bench/results/frontier.json, frontier.csv, frontier.png (samples under frontier-samples/).
"""
from __future__ import annotations

import argparse
import csv
import gc
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("LDLM_QUIET", "1")

import benchlib as B  # noqa: E402

FULL = {"ldlm_steps": "10,25,50,100,200", "ldlm_noise": "0.7,0.8,0.9,1.0", "mdlm_steps": "16,64,256,1024",
        "mdlm_temps": "0.8,0.9,1.0", "ar_temps": "0.7,0.8,0.9,1.0", "ar_top_p": "0.8,0.9,0.95", "num": 256,
        "timing_repeats": 5, "timing_num": 64}
QUICK = {"ldlm_steps": "5,10", "ldlm_noise": "1.0", "mdlm_steps": "4,16", "mdlm_temps": "1.0", "ar_temps": "1.0",
         "ar_top_p": "", "num": 32, "timing_repeats": 2, "timing_num": 8}
KEYS = ["steps", "noise_scale", "temperature", "top_p"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ldlm", help="trained LDLM run folder (e.g. runs/tiny)")
    p.add_argument("--mdlm", help="trained MDLM run folder (e.g. runs/tiny-mdlm)")
    p.add_argument("--ar", help="trained AR run folder (e.g. runs/tiny-ar)")
    p.add_argument("--quick", action="store_true", help="tiny grids and sample counts; trains micro runs if none given")
    for k in FULL:
        p.add_argument("--" + k.replace("_", "-"), type=type(FULL[k]), help=f"default {FULL[k]!r} (--quick {QUICK[k]!r})")
    p.add_argument("--entropy-tol", type=float, default=0.3, help="nats: 'similar entropy' (default 0.3)")
    p.add_argument("--ppl-tol", type=float, default=0.1,
                   help="converse match: MDLM is charged for its cheapest point within this share of its best gen-PPL")
    p.add_argument("--ldlm-best", help="label of the LDLM setting to use for the headline instead of the rule")
    p.add_argument("--eval-lm", help="evaluator (default smollm2, offline); see `ldlm eval --help`")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0, help="seed of the reference draw and MAUVE")
    p.add_argument("--sample-seed", type=int, default=0)
    p.add_argument("--out", help="output folder (default bench/results; --quick bench/results/quick)")
    p.add_argument("--fresh", action="store_true", help="ignore points already in frontier.json (default: reuse them)")
    p.add_argument("--replot", action="store_true", help="only re-render frontier.png from the saved frontier.json")
    a = p.parse_args(argv)
    base = QUICK if a.quick else FULL
    for k, v in base.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    return a


def floats(text):
    return [float(x) for x in str(text).split(",") if x.strip()]


def grid(algo: str, a) -> list[dict]:
    if algo == "ldlm":
        return [{"steps": int(s), "noise_scale": n} for n in floats(a.ldlm_noise) for s in floats(a.ldlm_steps)]
    if algo == "mdlm":
        return [{"steps": int(s), "temperature": t} for t in floats(a.mdlm_temps) for s in floats(a.mdlm_steps)]
    return ([{"temperature": t, "top_p": 1.0} for t in floats(a.ar_temps)]
            + [{"temperature": 1.0, "top_p": p} for p in floats(a.ar_top_p) if p < 1.0])


def label(setting: dict) -> str:
    short = {"steps": "S", "noise_scale": "ns", "temperature": "T", "top_p": "p"}
    return " ".join(f"{short[k]}{v}" for k, v in setting.items())


def quick_runs(out: Path, threads: int) -> dict:
    """Three micro runs (seconds each), reused when already complete."""
    from ldlm import checkpoint as ck
    from ldlm.config import load_config
    from ldlm.trainer import Trainer

    runs = {}
    for algo, cfg_name in (("ldlm", "micro"), ("mdlm", "micro-mdlm"), ("ar", "micro-ar")):
        d = out / "quick-runs" / algo
        if not (d.exists() and ck.latest_name(d)):
            cfg = load_config(str(B.ROOT / "configs" / f"{cfg_name}.yaml"), [f"train.threads={threads}"])
            B.log(f"training micro {algo} -> {d}")
            Trainer(cfg, str(d), quiet=True).train()
        runs[algo] = str(d)
    return runs


def data_key(cfg) -> tuple:
    d = cfg.data
    return (d.corpus, d.seq_len, d.passage_words, d.max_passages, d.valid_fraction, d.split_seed, cfg.model.lm)


# ---------------------------------------------------------------- headline
def _interp(a, b, f):
    return a + f * (b - a)


def _scored(rows: list[dict], algo: str) -> list[dict]:
    """The points of one model that have both gen-PPL and entropy (no evaluator: none)."""
    return [r for r in rows if r["algo"] == algo and r.get("gen_ppl") is not None and r.get("entropy") is not None]


def best_by_rule(points: list[dict], data_h: float | None, tol: float) -> tuple[dict, bool]:
    """(lowest gen-PPL among points with entropy >= data entropy - tol, True), or, when none qualifies,
    (the highest-entropy point, False): gen-PPL alone is gamed by repetition."""
    cands = [r for r in points if data_h is None or r["entropy"] >= data_h - tol]
    if cands:
        return min(cands, key=lambda r: r["gen_ppl"]), True
    return max(points, key=lambda r: r["entropy"]), False


def _point(r: dict) -> dict:
    return {k: r.get(k) for k in ("label", *KEYS, "gen_ppl", "entropy", "mauve", "sec_per_sample")}


def headline(rows: list[dict], data: dict | None, tol: float, forced: str | None = None) -> dict:
    """LDLM's best setting and the MDLM steps that reach its gen-PPL at similar entropy (see module doc)."""
    ld, md = _scored(rows, "ldlm"), _scored(rows, "mdlm")
    out: dict = {"entropy_tol": tol, "rule": "LDLM: lowest gen-PPL with entropy >= data entropy - tol; MDLM: first "
                 "crossing of that gen-PPL along steps (log-log interpolation) with |entropy - LDLM's| <= tol"}
    if not ld or not md:
        out["status"] = "unavailable: gen-PPL missing for LDLM or MDLM (no evaluator?)"
        return out
    data_h = data.get("entropy") if data else None
    if forced:
        best = next((r for r in ld if r["label"] == forced), None)
        if best is None:
            sys.exit(f"--ldlm-best {forced!r} is not an LDLM label; labels: {[r['label'] for r in ld]}")
        out["ldlm_choice"] = "given by --ldlm-best"
    else:
        best, by_rule = best_by_rule(ld, data_h, tol)
        out["ldlm_choice"] = "rule" if by_rule else (f"no LDLM setting has entropy >= data entropy {data_h:.3f} - "
                                                     f"{tol}; took the highest-entropy setting")
    target, h_target = best["gen_ppl"], best["entropy"]
    out["ldlm"] = _point(best)
    crossings, closest = [], None
    for temp in sorted({r["temperature"] for r in md}):
        curve = sorted((r for r in md if r["temperature"] == temp), key=lambda r: r["steps"])
        for i, r in enumerate(curve):
            gap = abs(math.log(r["gen_ppl"] / target)) + abs(r["entropy"] - h_target)
            if closest is None or gap < closest[0]:
                closest = (gap, r)
            if r["gen_ppl"] > target:
                continue
            if i == 0:  # already at or below the target at the fewest steps swept: an upper bound on steps
                c = {"temperature": temp, "steps": float(r["steps"]), "entropy": r["entropy"],
                     "sec_per_sample": r["sec_per_sample"], "bracket": [r["label"]], "at_grid_minimum": True}
            else:
                p = curve[i - 1]
                f = math.log(p["gen_ppl"] / target) / math.log(p["gen_ppl"] / r["gen_ppl"])
                c = {"temperature": temp,
                     "steps": math.exp(_interp(math.log(p["steps"]), math.log(r["steps"]), f)),
                     "entropy": _interp(p["entropy"], r["entropy"], f),
                     "sec_per_sample": math.exp(_interp(math.log(p["sec_per_sample"]), math.log(r["sec_per_sample"]), f)),
                     "bracket": [p["label"], r["label"]], "at_grid_minimum": False}
            c["entropy_ok"] = abs(c["entropy"] - h_target) <= tol
            crossings.append(c)
            break  # first crossing along steps
    out["mdlm_crossings"] = crossings
    good = [c for c in crossings if c["entropy_ok"]]
    if not good:
        max_steps = max(r["steps"] for r in md)
        slowest = max(md, key=lambda r: r["sec_per_sample"])
        out["status"] = "mdlm_never_reaches"
        out["message"] = (f"MDLM never reaches LDLM's gen-PPL {target:.1f} at entropy within {tol} of {h_target:.3f} "
                          f"with up to {max_steps} steps (temperatures {sorted({r['temperature'] for r in md})}); "
                          f"a lower bound on the ratio is MDLM's slowest swept setting ({slowest['label']}, "
                          f"{slowest['sec_per_sample'] * 1000:.1f} ms/sample) over LDLM's time")
        out["ratio_lower_bound_from_sweep"] = slowest["sec_per_sample"] / best["sec_per_sample"]
        out["mdlm_closest"] = {k: closest[1].get(k) for k in ("label", "gen_ppl", "entropy", "sec_per_sample")}
        return out
    m = min(good, key=lambda c: c["sec_per_sample"])
    out["status"] = "ok"
    out["mdlm"] = m
    out["ratio_from_sweep"] = m["sec_per_sample"] / best["sec_per_sample"]
    if m["at_grid_minimum"]:
        out["note"] = (f"MDLM is already at or below the target at its fewest swept steps ({m['bracket'][0]}); "
                       f"fewer steps might also reach it, so the ratio is an upper bound")
    return out


def at_mdlm_best(rows: list[dict], data: dict | None, tol: float, ppl_tol: float = 0.1) -> dict:
    """The converse match: MDLM's best quality and LDLM's fastest setting that is at least as good.

    Defined even when MDLM never reaches LDLM's best (then the headline ratio only has a lower bound):
    MDLM's best = its lowest gen-PPL with entropy >= data entropy - tol (else its highest-entropy point);
    MDLM's cost = its cheapest point within ppl_tol (relative) of that gen-PPL at entropy within tol, so
    that a flat quality-vs-steps curve is not charged for its most expensive point; LDLM's match = the
    fastest LDLM point with gen-PPL <= MDLM's best and entropy >= MDLM's - tol.
    """
    ld, md = _scored(rows, "ldlm"), _scored(rows, "mdlm")
    out: dict = {"rule": f"MDLM: lowest gen-PPL with entropy >= data entropy - tol, charged at its cheapest point within "
                 f"{ppl_tol:.0%} of it; LDLM: fastest point with gen-PPL <= MDLM's lowest and entropy >= MDLM's - tol",
                 "entropy_tol": tol, "ppl_tol": ppl_tol}
    if not ld or not md:
        return {**out, "status": "unavailable: gen-PPL missing for LDLM or MDLM"}
    best, _ = best_by_rule(md, data.get("entropy") if data else None, tol)
    near = [r for r in md if r["gen_ppl"] <= best["gen_ppl"] * (1 + ppl_tol) and abs(r["entropy"] - best["entropy"]) <= tol]
    m = min(near, key=lambda r: r["sec_per_sample"])
    matches = [r for r in ld if r["gen_ppl"] <= best["gen_ppl"] and r["entropy"] >= best["entropy"] - tol]
    out.update(mdlm_best=_point(best), mdlm=_point(m))
    if not matches:
        return {**out, "status": "ldlm_never_reaches",
                "message": f"no LDLM setting reaches MDLM's best gen-PPL {best['gen_ppl']:.1f} at entropy >= "
                           f"{best['entropy'] - tol:.3f}"}
    l = min(matches, key=lambda r: r["sec_per_sample"])
    out.update(status="ok", ldlm=_point(l), ratio_from_sweep=m["sec_per_sample"] / l["sec_per_sample"])
    return out


def time_pair(models: dict, ld: dict, md: dict, a) -> dict:
    """Time one LDLM and one MDLM setting, interleaved, --timing-repeats times after a warm-up of each."""
    from ldlm.generate import generate

    n = a.timing_num
    run = {"ldlm": lambda: generate(models["ldlm"], num=n, batch_size=n, seed=a.sample_seed, **ld)[0]["sec_per_sample"],
           "mdlm": lambda: generate(models["mdlm"], num=n, batch_size=n, seed=a.sample_seed, **md)[0]["sec_per_sample"]}
    run["ldlm"](), run["mdlm"]()  # warm-up
    tl, tm = [], []
    for _ in range(a.timing_repeats):
        tl.append(run["ldlm"]())
        tm.append(run["mdlm"]())
    ratios = [m / l for m, l in zip(tm, tl)]
    return {"num": n, "batch_size": n, "repeats": a.timing_repeats, "ldlm_setting": ld, "mdlm_setting": md,
            "ldlm_sec_per_sample": B.summary(tl), "mdlm_sec_per_sample": B.summary(tm), "ratio": B.summary(ratios)}


def settings_of(point: dict) -> dict:
    return {k: point[k] for k in KEYS if point.get(k) is not None}


def retime(h: dict, models: dict, a) -> None:
    """Time both matched pairs again, interleaved; adds ratio statistics (median and spread)."""
    if h.get("status") == "ok":
        md = {"steps": max(1, math.ceil(h["mdlm"]["steps"] - 1e-9)), "temperature": h["mdlm"]["temperature"]}
        h["timing"] = time_pair(models, settings_of(h["ldlm"]), md, a)
    conv = h.get("at_mdlm_best", {})
    if conv.get("status") == "ok":
        conv["timing"] = time_pair(models, settings_of(conv["ldlm"]), settings_of(conv["mdlm"]), a)


# ---------------------------------------------------------------- outputs
CSV_COLS = ["algo", "label", *KEYS, "sec_per_sample"]


def write_csv(path: Path, rows: list[dict]) -> None:
    from ldlm.frontier import CSV_METRICS

    cols = CSV_COLS + CSV_METRICS
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in cols})


def plot_title(res: dict, eval_lm: str | None) -> str:
    eval_lm = ((res.get("eval_settings") or {}).get("evaluator") or {}).get("eval_lm") or eval_lm
    return (f"{', '.join(f'{k}: {Path(v).name}' for k, v in res['runs'].items())}; {res['num']} samples/point; "
            f"evaluator {eval_lm or 'smollm2'}; {res['machine'].get('gpu') or res['machine']['cpu']}")


def converse_message(c: dict) -> str:
    if c.get("status") != "ok":
        return f"at MDLM's best quality: {c.get('message') or c.get('status')}"
    t = c.get("timing", {}).get("ratio")
    return (f"at MDLM's best quality (gen-PPL {c['mdlm_best']['gen_ppl']:.1f} at {c['mdlm_best']['label']}; "
            f"charged at MDLM {c['mdlm']['label']}, gen-PPL {c['mdlm']['gen_ppl']:.1f}, entropy "
            f"{c['mdlm']['entropy']:.2f}), LDLM {c['ldlm']['label']} (gen-PPL {c['ldlm']['gen_ppl']:.1f}, entropy "
            f"{c['ldlm']['entropy']:.2f}) is "
            + (f"{t['median']:.2f}x faster (min {t['min']:.2f}, max {t['max']:.2f}, n={t['n']})" if t
               else f"{c['ratio_from_sweep']:.2f}x faster (from the sweep)"))


def plot(path: Path, rows: list[dict], data: dict | None, h: dict, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    colors = {"ldlm": "tab:blue", "mdlm": "tab:orange", "ar": "tab:green"}
    group_of = {"ldlm": "noise_scale", "mdlm": "temperature", "ar": "top_p"}
    along_of = {"ldlm": "steps", "mdlm": "steps", "ar": "temperature"}
    pts = [r for r in rows if r.get("gen_ppl") is not None]
    for algo in ("ldlm", "mdlm", "ar"):
        rs = [r for r in pts if r["algo"] == algo]
        groups = sorted({r.get(group_of[algo]) for r in rs})
        for gi, g in enumerate(groups):
            line = sorted((r for r in rs if r.get(group_of[algo]) == g), key=lambda r: r.get(along_of[algo]))
            alpha = 0.35 + 0.65 * (gi + 1) / len(groups)
            ax.plot([r["entropy"] for r in line], [r["gen_ppl"] for r in line], marker="o", ms=4, color=colors[algo],
                    alpha=alpha, label=f"{algo.upper()} {group_of[algo]}={g}")
            for r in line:
                ax.annotate(f"{label({along_of[algo]: r.get(along_of[algo])})} {r['sec_per_sample'] * 1000:.0f}ms",
                            (r["entropy"], r["gen_ppl"]), textcoords="offset points", xytext=(4, 3), fontsize=6,
                            color=colors[algo], alpha=alpha)
    if data and data.get("gen_ppl") is not None:
        ax.scatter([data["entropy"]], [data["gen_ppl"]], marker="*", s=260, c="k", zorder=5, label="data")
    if h.get("ldlm"):
        ax.scatter([h["ldlm"]["entropy"]], [h["ldlm"]["gen_ppl"]], s=220, facecolors="none", edgecolors="k",
                   linewidths=1.5, zorder=6, label="LDLM best")
    if h.get("status") == "ok":
        ax.scatter([h["mdlm"]["entropy"]], [h["ldlm"]["gen_ppl"]], marker="X", s=140, c="k", zorder=6,
                   label=f"MDLM reaches it at ~{h['mdlm']['steps']:.0f} steps")
        t = h.get("timing", {}).get("ratio")
        txt = (f"MDLM / LDLM time at matched quality: {t['median']:.2f}x (min {t['min']:.2f}, max {t['max']:.2f}, "
               f"n={t['n']})" if t else f"ratio from the sweep: {h['ratio_from_sweep']:.2f}x")
    else:
        txt = h.get("message") or h.get("status", "")
    conv = h.get("at_mdlm_best", {})
    if conv.get("status") == "ok":
        ax.scatter([conv["mdlm"]["entropy"]], [conv["mdlm"]["gen_ppl"]], marker="s", s=160, facecolors="none",
                   edgecolors="tab:red", linewidths=1.5, zorder=6, label="MDLM near its best (timed)")
        ax.scatter([conv["ldlm"]["entropy"]], [conv["ldlm"]["gen_ppl"]], marker="D", s=120, facecolors="none",
                   edgecolors="tab:red", linewidths=1.5, zorder=6, label="fastest LDLM at least as good")
        txt += ". " + converse_message(conv)
    import textwrap

    ax.set_yscale("log")
    ax.set_xlabel("entropy (nats, evaluator tokens)")
    ax.set_ylabel("generative perplexity")
    ax.set_title("\n".join(textwrap.wrap(title, 110) + textwrap.wrap(txt, 110)), fontsize=8)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> dict:
    import json

    a = parse_args(argv)
    B.set_threads(a.threads)
    device = B.pick_device(a.device)
    out = Path(a.out) if a.out else (B.RESULTS / "quick" if a.quick else B.RESULTS)
    if a.replot:
        if not (out / "frontier.json").is_file():
            sys.exit(f"--replot: {out / 'frontier.json'} does not exist; run the sweep first (or pass --out)")
        res = json.loads((out / "frontier.json").read_text())
        plot(out / "frontier.png", res["rows"], res["data"], res["headline"], plot_title(res, a.eval_lm))
        return res
    out.mkdir(parents=True, exist_ok=True)
    runs = {"ldlm": a.ldlm, "mdlm": a.mdlm, "ar": a.ar}
    if a.quick and not any(runs.values()):
        runs = quick_runs(out, a.threads)
    runs = {k: v for k, v in runs.items() if v}
    if "ldlm" not in runs:
        sys.exit("give --ldlm RUN (and --mdlm RUN for the headline ratio), or --quick")

    from ldlm import checkpoint as ck
    from ldlm.evaluation import PROTOCOL, build_references, format_table, make_evaluation
    from ldlm.generate import generate, load_model, write_samples

    cfgs = {k: ck.load_config_of(ck.resolve_checkpoint(v)) for k, v in runs.items()}
    notes = []
    keys = {k: data_key(c) for k, c in cfgs.items()}
    if len(set(keys.values())) > 1:
        notes.append(f"WARNING: the runs differ in data/tokenizer/length settings {keys}; the frontiers are not comparable")
    refs, refs_b, note = build_references("valid", cfgs["ldlm"], a.num, [], a.seed)
    ev = make_evaluation(a.eval_lm, refs, refs_b, note, seed=a.seed, device=device, batch_size=16, threads=a.threads)
    prev = {}
    jpath = out / "frontier.json"
    if jpath.exists() and not a.fresh:
        try:
            old = json.loads(jpath.read_text())
            prev = {(r["algo"], r["label"]): r for r in old.get("rows", [])
                    if r.get("num") == a.num and r.get("checkpoint") == str(ck.resolve_checkpoint(runs[r["algo"]]))
                    if r["algo"] in runs}
        except (ValueError, KeyError, OSError):
            prev = {}
    t0 = time.time()
    res = {"benchmark": "frontier", "protocol": PROTOCOL, "quick": a.quick, "machine": B.machine_info(device),
           "runs": runs, "num": a.num, "sample_seed": a.sample_seed, "eval_settings": ev.settings, "notes": notes,
           "data": ev.data_row(), "rows": []}
    samples_dir = out / "frontier-samples"
    for algo, path in runs.items():
        model = load_model(path, device=device)
        ckpt = str(model.checkpoint)
        settings = grid(algo, a)
        warmed = False
        for s in settings:
            lab = label(s)
            if (algo, lab) in prev:
                res["rows"].append(prev[(algo, lab)])
                continue
            if not warmed:  # one-time costs out of sec/sample
                generate(model, num=min(a.num, 8), seed=a.sample_seed, **s)
                warmed = True
            recs = generate(model, num=a.num, seed=a.sample_seed, **s)
            write_samples(recs, samples_dir / f"{algo}-{lab.replace(' ', '_')}.jsonl")
            row = {"algo": algo, "label": lab, **s, "checkpoint": ckpt, "sec_per_sample": recs[0]["sec_per_sample"],
                   "sample_batch_size": model.cfg.sample.batch_size,
                   **ev.evaluate([r["text"] for r in recs], desc=f"scoring {algo} {lab}")}
            res["rows"].append(row)
            B.log(f"{algo:5s} {format_table({lab: row}).splitlines()[1]} {row['sec_per_sample'] * 1000:8.1f} ms/sample")
            B.write_json(jpath, res)  # after every point: an interrupted sweep keeps what it finished
            write_csv(out / "frontier.csv", res["rows"])
        del model
        gc.collect()
    h = headline(res["rows"], res["data"], a.entropy_tol, a.ldlm_best)
    h["at_mdlm_best"] = at_mdlm_best(res["rows"], res["data"], a.entropy_tol, a.ppl_tol)
    if "mdlm" in runs and "ok" in (h.get("status"), h["at_mdlm_best"].get("status")):
        models = {k: load_model(runs[k], device=device) for k in ("ldlm", "mdlm")}
        retime(h, models, a)
        del models
    res["headline"] = h
    res["wall_s"] = time.time() - t0
    B.write_json(jpath, res)
    write_csv(out / "frontier.csv", [{"algo": "data", "label": "data", **(res["data"] or {})}] + res["rows"])
    plot(out / "frontier.png", res["rows"], res["data"], h, plot_title(res, a.eval_lm))
    if h.get("status") == "ok":
        t = h.get("timing", {}).get("ratio")
        msg = (f"headline: LDLM {h['ldlm']['label']} (gen-PPL {h['ldlm']['gen_ppl']:.1f}, entropy "
               f"{h['ldlm']['entropy']:.2f}) vs MDLM T{h['mdlm']['temperature']} at ~{h['mdlm']['steps']:.0f} steps: "
               + (f"MDLM/LDLM time {t['median']:.2f}x (min {t['min']:.2f}, max {t['max']:.2f}, n={t['n']})" if t
                  else f"{h['ratio_from_sweep']:.2f}x from the sweep"))
    else:
        msg = f"headline: {h.get('message') or h.get('status')}"
    B.log(msg)
    B.log(converse_message(h["at_mdlm_best"]))
    B.log(f"written: {jpath}, frontier.csv, frontier.png ({res['wall_s']:.0f} s)")
    return res


if __name__ == "__main__":
    main()
