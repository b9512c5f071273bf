"""Quality-diversity frontiers of LDLM, MDLM and AR in one plot, and the speed ratios at matched quality.

    .venv/bin/python bench/frontier.py --ldlm runs/tiny --mdlm runs/tiny-mdlm --ar runs/tiny-ar --tencdm runs/tiny-tencdm
    .venv/bin/python bench/frontier.py --quick          # smoke test: trains four micro runs first
    .venv/bin/python bench/frontier.py --replot         # re-render frontier.png and .md from frontier.json
    .venv/bin/python bench/frontier.py --ldlm runs/tiny --ar runs/tiny-ar --sample-seed 0,1,2,3   # each point: 4 draws

Each model is swept over its own full knob set, as a grid (cartesian product): LDLM steps x noise
scale x decode temperature x rounding time (`sample.round_below`) x the rounding readout's temperature
(`sample.round_temperature`; TEncDM, on LDLM's sampler, the same); the readout's contrast and end mass
(`sample.readout_contrast`, `sample.stop_mass`) and the guidance away from the mean latent (`sample.mean_guidance`)
only when given (--ldlm-contrast, --ldlm-stop-mass, --ldlm-mean-guidance); MDLM
steps x temperature x top-p; AR temperature x top-p. The default
grids give each model 24 points (AR, with no steps knob, gets more values of each of its two), so
no model's frontier is drawn from a narrower search. Every point is scored with the same evaluator
and references (`ldlm eval`'s protocol: gen-PPL, entropy, MAUVE, distinct-n), plus the data row.

One rule for "at least as good", used in every direction (one --entropy-tol): a point matches a
target point if its gen-PPL is no higher and its entropy is no lower than max(data entropy, target
entropy) - tol. A model's best point is its lowest gen-PPL among points with entropy >= data
entropy - tol (gen-PPL alone is gamed by repetition).

Headline ("at LDLM's best"): MDLM's cost for LDLM's best quality: along each (temperature, top-p)
curve over steps, the first crossing of LDLM's gen-PPL (interpolated in log gen-PPL vs log steps),
kept if the entropy there matches by the rule; the cheapest such crossing wins. Both are then timed
again, interleaved, --timing-repeats times (0: not re-timed; MDLM at the crossing's steps rounded up); ratio = MDLM
time / LDLM time, median and min-max over the repeats. If MDLM never reaches it, the JSON and the
output say so (and give a lower bound).

The converse match is always reported too ("at_mdlm_best"): MDLM's best point, charged at MDLM's
cheapest matching point within --ppl-tol of its gen-PPL (its quality is often flat in steps), and the
fastest LDLM point that matches it, both retimed the same way. With an AR run, the same two matches
against AR are reported ("vs_ar": AR's cheapest point matching LDLM's best, and LDLM's fastest point
matching AR's best), so the table says where LDLM stands against the strongest baseline too; with a
TEncDM run (the continuous-diffusion baseline), the same pair against it ("vs_tencdm").

Writes bench/results/frontier.json, frontier.md (the table and the matches), frontier.csv and frontier.png
(samples under frontier-samples/). With several `--sample-seed`s every point is the mean over the seeds (its
sample std beside it, error bars in the plot, each seed's row under "seed_rows"); the matches use the means, so
one lucky draw does not decide a comparison.
"""
from __future__ import annotations

import argparse
import csv
import gc
import itertools
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("LDLM_QUIET", "1")

import benchlib as B  # noqa: E402
from ldlm.frontier import SWEEPABLE  # noqa: E402

# each model's knobs: (sampling setting, argument holding its comma list, type); the grid is their product,
# with the first knob varying fastest (points along steps, or along temperature for AR, form one curve)
KNOBS = {"ldlm": [("steps", "ldlm_steps", int), ("noise_scale", "ldlm_noise", float),
                  ("decode_temperature", "ldlm_decode_temps", float), ("round_below", "ldlm_round", float),
                  ("round_temperature", "ldlm_round_temps", float), ("readout_contrast", "ldlm_contrast", float),
                  ("stop_mass", "ldlm_stop_mass", float), ("mean_guidance", "ldlm_mean_guidance", float)],
         "mdlm": [("steps", "mdlm_steps", int), ("temperature", "mdlm_temps", float), ("top_p", "mdlm_top_p", float)],
         "ar": [("temperature", "ar_temps", float), ("top_p", "ar_top_p", float)],
         # TEncDM samples with LDLM's sampler, so it gets LDLM's knobs (its own lists, LDLM's defaults)
         "tencdm": [("steps", "tencdm_steps", int), ("noise_scale", "tencdm_noise", float),
                    ("decode_temperature", "tencdm_decode_temps", float), ("round_below", "tencdm_round", float),
                    ("round_temperature", "tencdm_round_temps", float), ("readout_contrast", "tencdm_contrast", float),
                    ("stop_mass", "tencdm_stop_mass", float), ("mean_guidance", "tencdm_mean_guidance", float)]}
BASELINES = ("ar", "tencdm")  # compared with LDLM point against point (no steps-crossing interpolation)
FULL = {"ldlm_steps": "10,25", "ldlm_noise": "0.9,1.2", "ldlm_decode_temps": "0,0.7", "ldlm_round": "0,0.1",
        "ldlm_round_temps": "0,1.0", "ldlm_contrast": "", "ldlm_stop_mass": "",
        "ldlm_mean_guidance": "", "mdlm_steps": "16,64,256,1024", "mdlm_temps": "0.8,0.9,1.0", "mdlm_top_p": "0.9,1.0",
        "ar_temps": "0.6,0.7,0.8,0.9,1.0,1.1", "ar_top_p": "0.8,0.9,0.95,1.0", "num": 256,
        "timing_repeats": 5, "timing_num": 64}
QUICK = {"ldlm_steps": "5,10", "ldlm_noise": "1.0", "ldlm_decode_temps": "0,1.0", "ldlm_round": "0", "ldlm_round_temps": "0",
         "ldlm_contrast": "", "ldlm_stop_mass": "", "ldlm_mean_guidance": "", "mdlm_steps": "4,16",
         "mdlm_temps": "1.0", "mdlm_top_p": "0.9,1.0", "ar_temps": "0.8,1.0", "ar_top_p": "0.9,1.0", "num": 32,
         "timing_repeats": 2, "timing_num": 8}
for _grid in (FULL, QUICK):  # TEncDM's default lists are LDLM's
    _grid.update({"tencdm" + k[4:]: v for k, v in list(_grid.items()) if k.startswith("ldlm_")})
# the sampling settings a point records (CSV columns) and their short names in labels: ldlm frontier's
KEYS = [k for k in SWEEPABLE if k != "solver"]
SHORT = {k: SWEEPABLE[k][1] for k in KEYS}
# opt-in knobs: swept only when given a list (default: the checkpoint's own setting), so the default grids, sized
# for equal breadth across models, are unchanged
OPT_IN = {"readout_contrast", "stop_mass", "mean_guidance"}
OFF = {"round_below": 0.0, "round_temperature": 0.0, "readout_contrast": 0.0, "stop_mass": 0.0,
       "mean_guidance": 0.0}  # a knob at this value is left out of the label (labels from before the knob still match)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ldlm", help="trained LDLM run folder (e.g. runs/tiny)")
    p.add_argument("--mdlm", help="trained MDLM run folder (e.g. runs/tiny-mdlm)")
    p.add_argument("--ar", help="trained AR run folder (e.g. runs/tiny-ar)")
    p.add_argument("--tencdm", help="trained TEncDM run folder (e.g. runs/tiny-tencdm): the continuous-diffusion baseline")
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
    p.add_argument("--sample-seed", default="0",
                   help="sampling seed, or a comma list: each point is then the mean over the seeds, with the sample "
                        "std of gen-PPL, entropy, MAUVE and distinct-2 (`<metric>_std`) and each seed's row kept")
    p.add_argument("--out", help="output folder (default bench/results; --quick bench/results/quick)")
    p.add_argument("--fresh", action="store_true", help="ignore points already in frontier.json (default: reuse them)")
    p.add_argument("--replot", action="store_true", help="only re-render frontier.png/.md from the saved frontier.json")
    a = p.parse_args(argv)
    from ldlm.errors import UserError
    from ldlm.frontier import parse_list

    try:
        a.sample_seeds = parse_list(str(a.sample_seed), int, "sample-seed")
    except UserError as e:
        p.error(str(e))
    base = QUICK if a.quick else FULL
    for k, v in base.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    return a


def floats(text):
    return [float(x) for x in str(text).split(",") if x.strip()]


def grid(algo: str, a) -> list[dict]:
    """Every combination of the model's knob values (KNOBS), the first knob varying fastest."""
    knobs = [k for k in KNOBS[algo] if k[0] not in OPT_IN or floats(getattr(a, k[1]))]
    lists = []
    for key, arg, typ in knobs:
        values = [typ(v) for v in floats(getattr(a, arg))]
        if not values:
            sys.exit(f"--{arg.replace('_', '-')} is empty; give at least one value")
        lists.append(values)
    combos = itertools.product(*reversed(lists))
    from ldlm.frontier import drop_inert  # a knob with no effect at another's value keeps only its off value there

    return drop_inert([{key: v for (key, _, _), v in zip(knobs, reversed(c))} for c in combos])


def label(setting: dict) -> str:
    return " ".join(f"{SHORT[k]}{v}" for k, v in setting.items() if k not in OFF or v != OFF[k])


def quick_runs(out: Path, threads: int) -> dict:
    """Four micro runs (seconds each), reused when already complete."""
    from ldlm import checkpoint as ck
    from ldlm.config import load_config
    from ldlm.trainer import Trainer

    runs = {}
    for algo, cfg_name in (("ldlm", "micro"), ("mdlm", "micro-mdlm"), ("ar", "micro-ar"), ("tencdm", "micro-tencdm")):
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


def entropy_floor(data_h: float | None, target_h: float, tol: float) -> float:
    """The lowest entropy a point may have to match a target point: within tol of the target's and of
    the data's, whichever is higher (the same bar in every direction of every match)."""
    return (target_h if data_h is None else max(data_h, target_h)) - tol


def matches(r: dict, target: dict, data_h: float | None, tol: float) -> bool:
    """r is at least as good as target: gen-PPL no higher, entropy at or above `entropy_floor`."""
    return r["gen_ppl"] <= target["gen_ppl"] and r["entropy"] >= entropy_floor(data_h, target["entropy"], tol)


def _point(r: dict) -> dict:
    return {k: r.get(k) for k in ("label", *KEYS, "gen_ppl", "entropy", "mauve", "sec_per_sample")}


def _curves(points: list[dict], along: str) -> dict[tuple, list[dict]]:
    """Points grouped by every knob but `along`, each group sorted along it."""
    groups: dict[tuple, list[dict]] = {}
    for r in points:
        key = tuple((k, r.get(k)) for k in KEYS if k != along and r.get(k) is not None)
        groups.setdefault(key, []).append(r)
    return {k: sorted(v, key=lambda r: r[along]) for k, v in sorted(groups.items(), key=lambda kv: str(kv[0]))}


def headline(rows: list[dict], data: dict | None, tol: float, forced: str | None = None) -> dict:
    """LDLM's best setting and the MDLM steps that reach its gen-PPL at matching entropy (see module doc)."""
    ld, md = _scored(rows, "ldlm"), _scored(rows, "mdlm")
    out: dict = {"entropy_tol": tol, "rule": "LDLM: lowest gen-PPL with entropy >= data entropy - tol; MDLM: first "
                 "crossing of that gen-PPL along steps (log-log interpolation) with entropy >= max(data, LDLM's) - tol"}
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
    floor = entropy_floor(data_h, h_target, tol)
    out["ldlm"] = _point(best)
    out["entropy_floor"] = floor
    crossings, closest = [], None
    for knobs, curve in _curves(md, "steps").items():
        fixed = dict(knobs)
        for i, r in enumerate(curve):
            gap = abs(math.log(r["gen_ppl"] / target)) + abs(r["entropy"] - h_target)
            if closest is None or gap < closest[0]:
                closest = (gap, r)
            if r["gen_ppl"] > target:
                continue
            if i == 0:  # already at or below the target at the fewest steps swept: an upper bound on steps
                c = {**fixed, "steps": float(r["steps"]), "entropy": r["entropy"],
                     "sec_per_sample": r["sec_per_sample"], "bracket": [r["label"]], "at_grid_minimum": True}
            else:
                p = curve[i - 1]
                f = math.log(p["gen_ppl"] / target) / math.log(p["gen_ppl"] / r["gen_ppl"])
                c = {**fixed,
                     "steps": math.exp(_interp(math.log(p["steps"]), math.log(r["steps"]), f)),
                     "entropy": _interp(p["entropy"], r["entropy"], f),
                     "sec_per_sample": math.exp(_interp(math.log(p["sec_per_sample"]), math.log(r["sec_per_sample"]), f)),
                     "bracket": [p["label"], r["label"]], "at_grid_minimum": False}
            c["entropy_ok"] = c["entropy"] >= floor
            crossings.append(c)
            break  # first crossing along steps
    out["mdlm_crossings"] = crossings
    good = [c for c in crossings if c["entropy_ok"]]
    if not good:
        max_steps = max(r["steps"] for r in md)
        slowest = max(md, key=lambda r: r["sec_per_sample"])
        out["status"] = "mdlm_never_reaches"
        out["message"] = (f"MDLM never reaches LDLM's gen-PPL {target:.1f} at entropy >= {floor:.3f} with up to "
                          f"{max_steps} steps ({len(md)} settings swept)")
        # a time ratio, so shown only when the sweep's times mean something (not with --timing-repeats 0)
        out["lower_bound"] = (f"a lower bound on the ratio is MDLM's slowest swept setting ({slowest['label']}, "
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


def at_best(rows: list[dict], data: dict | None, tol: float, ppl_tol: float = 0.1, other: str = "mdlm") -> dict:
    """The converse match: the other model's best quality and LDLM's fastest setting that matches it.

    Defined even when the other model never reaches LDLM's best: its best = lowest gen-PPL with entropy
    >= data entropy - tol (else its highest-entropy point); its cost = its cheapest point within ppl_tol
    (relative) of that gen-PPL that matches the best's entropy by the rule, so that a flat
    quality-vs-steps curve is not charged for its most expensive point; LDLM's match = the fastest LDLM
    point that matches the best by the rule (`matches`).
    """
    ld, ot = _scored(rows, "ldlm"), _scored(rows, other)
    out: dict = {"rule": f"{other.upper()}: lowest gen-PPL with entropy >= data entropy - tol, charged at its cheapest "
                 f"point within {ppl_tol:.0%} of it; LDLM: fastest point with gen-PPL <= {other.upper()}'s lowest and "
                 f"entropy >= max(data, {other.upper()}'s) - tol", "entropy_tol": tol, "ppl_tol": ppl_tol}
    if not ld or not ot:
        return {**out, "status": f"unavailable: gen-PPL missing for LDLM or {other.upper()}"}
    data_h = data.get("entropy") if data else None
    best, _ = best_by_rule(ot, data_h, tol)
    floor = entropy_floor(data_h, best["entropy"], tol)
    near = [r for r in ot if r["gen_ppl"] <= best["gen_ppl"] * (1 + ppl_tol) and r["entropy"] >= floor] or [best]
    m = min(near, key=lambda r: r["sec_per_sample"])
    found = [r for r in ld if matches(r, best, data_h, tol)]
    out.update({f"{other}_best": _point(best), other: _point(m), "entropy_floor": floor})
    if not found:
        return {**out, "status": "ldlm_never_reaches",
                "message": f"no LDLM setting reaches {other.upper()}'s best gen-PPL {best['gen_ppl']:.1f} at entropy "
                           f">= {floor:.3f}"}
    l = min(found, key=lambda r: r["sec_per_sample"])
    out.update(status="ok", ldlm=_point(l), ratio_from_sweep=m["sec_per_sample"] / l["sec_per_sample"])
    return out


def at_mdlm_best(rows: list[dict], data: dict | None, tol: float, ppl_tol: float = 0.1) -> dict:
    return at_best(rows, data, tol, ppl_tol, "mdlm")


def at_ldlm_best_discrete(rows: list[dict], data: dict | None, tol: float, other: str = "ar") -> dict:
    """The other model's cheapest swept point that matches LDLM's best (no steps axis to interpolate)."""
    ld, ot = _scored(rows, "ldlm"), _scored(rows, other)
    out: dict = {"rule": f"LDLM: lowest gen-PPL with entropy >= data entropy - tol; {other.upper()}: cheapest point "
                 f"with gen-PPL <= LDLM's and entropy >= max(data, LDLM's) - tol", "entropy_tol": tol}
    if not ld or not ot:
        return {**out, "status": f"unavailable: gen-PPL missing for LDLM or {other.upper()}"}
    data_h = data.get("entropy") if data else None
    best, _ = best_by_rule(ld, data_h, tol)
    found = [r for r in ot if matches(r, best, data_h, tol)]
    out.update(ldlm=_point(best), entropy_floor=entropy_floor(data_h, best["entropy"], tol))
    if not found:
        return {**out, "status": f"{other}_never_reaches",
                "message": f"no {other.upper()} setting reaches LDLM's best gen-PPL {best['gen_ppl']:.1f} at entropy "
                           f">= {out['entropy_floor']:.3f}"}
    m = min(found, key=lambda r: r["sec_per_sample"])
    out.update(status="ok", **{other: _point(m)}, ratio_from_sweep=m["sec_per_sample"] / best["sec_per_sample"])
    return out


def time_pair(models: dict, ld: dict, od: dict, a, other: str = "mdlm") -> dict:
    """Time one LDLM and one other model's setting, interleaved, --timing-repeats times after a warm-up of each."""
    from ldlm.generate import generate

    n = a.timing_num

    def run(algo, setting):
        return generate(models[algo], num=n, batch_size=n, seed=a.sample_seeds[0], **setting)[0]["sec_per_sample"]

    run("ldlm", ld), run(other, od)  # warm-up
    tl, to = [], []
    for _ in range(a.timing_repeats):
        tl.append(run("ldlm", ld))
        to.append(run(other, od))
    ratios = [o / l for o, l in zip(to, tl)]
    return {"num": n, "batch_size": n, "repeats": a.timing_repeats, "ldlm_setting": ld, f"{other}_setting": od,
            "ldlm_sec_per_sample": B.summary(tl), f"{other}_sec_per_sample": B.summary(to), "ratio": B.summary(ratios)}


def settings_of(point: dict) -> dict:
    return {k: point[k] for k in KEYS if point.get(k) is not None}


def retime(h: dict, models: dict, a) -> None:
    """Time every matched pair again, interleaved; adds ratio statistics (median and spread)."""
    if "mdlm" in models:
        if h.get("status") == "ok":
            md = {**settings_of(h["mdlm"]), "steps": max(1, math.ceil(h["mdlm"]["steps"] - 1e-9))}
            h["timing"] = time_pair(models, settings_of(h["ldlm"]), md, a)
        conv = h.get("at_mdlm_best", {})
        if conv.get("status") == "ok":
            conv["timing"] = time_pair(models, settings_of(conv["ldlm"]), settings_of(conv["mdlm"]), a)
    for other in BASELINES:
        if other not in models:
            continue
        for m in h.get(f"vs_{other}", {}).values():
            if m.get("status") == "ok":
                m["timing"] = time_pair(models, settings_of(m["ldlm"]), settings_of(m[other]), a, other)


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
    from ldlm.evaluator import SMOLLM2, evaluator_name

    eval_lm = evaluator_name((res.get("eval_settings") or {}).get("evaluator") or eval_lm or SMOLLM2)
    return (f"{', '.join(f'{k}: {Path(v).name}' for k, v in res['runs'].items())}; {res['num']} samples/point; "
            f"evaluator {eval_lm}; {res['machine'].get('gpu') or res['machine']['cpu']}")


def headline_message(h: dict) -> str:
    """The headline's text when MDLM has no match: why, and the sweep's lower bound on the ratio if it was timed."""
    txt = h.get("message") or h.get("status", "")
    return txt + (f"; {h['lower_bound']}" if h.get("lower_bound") and not h.get("untimed") else "")


def ratio_text(m: dict, unit: str) -> str:
    """A match's time ratio: the interleaved re-timing's median and range, or the sweep's single ratio."""
    t = m.get("timing", {}).get("ratio")
    if m.get("untimed"):
        return "not timed (--timing-repeats 0)"
    return (f"{t['median']:.2f}x {unit} (min {t['min']:.2f}, max {t['max']:.2f}, n={t['n']})" if t
            else f"{m['ratio_from_sweep']:.2f}x {unit} (from the sweep)")


def converse_message(c: dict, other: str = "mdlm") -> str:
    name = other.upper()
    if c.get("status") != "ok":
        return f"at {name}'s best quality: {c.get('message') or c.get('status')}"
    return (f"at {name}'s best quality (gen-PPL {c[f'{other}_best']['gen_ppl']:.1f} at {c[f'{other}_best']['label']}; "
            f"charged at {name} {c[other]['label']}, gen-PPL {c[other]['gen_ppl']:.1f}, entropy "
            f"{c[other]['entropy']:.2f}), LDLM {c['ldlm']['label']} (gen-PPL {c['ldlm']['gen_ppl']:.1f}, entropy "
            f"{c['ldlm']['entropy']:.2f}) is " + ratio_text(c, "faster"))


def baseline_message(c: dict, other: str = "ar") -> str:
    """A baseline's cheapest point at LDLM's best quality, in words."""
    name = other.upper()
    if c.get("status") != "ok":
        return f"{name} at LDLM's best quality: {c.get('message') or c.get('status')}"
    return (f"{name} at LDLM's best quality (LDLM {c['ldlm']['label']}, gen-PPL {c['ldlm']['gen_ppl']:.1f}, entropy "
            f"{c['ldlm']['entropy']:.2f}): {name} {c[other]['label']} (gen-PPL {c[other]['gen_ppl']:.1f}, entropy "
            f"{c[other]['entropy']:.2f}) " + ("matches it, " if c.get("untimed") else "takes ")
            + ratio_text(c, "LDLM's time"))


def _cell(v, fmt: str, std=None) -> str:
    return "n/a" if v is None else fmt.format(v) + ("" if std is None else " ± " + fmt.format(std))


def seed_mean(rows: list[dict]) -> dict:
    """One point from a setting sampled at several seeds (`rows`, one per seed): every numeric field's mean
    (the setting's own knobs aside), the sample std of `ldlm frontier`'s spread metrics as `<metric>_std`, and
    the seeds."""
    import statistics

    from ldlm.frontier import SPREAD_METRICS, metric_spread

    out = {k: v for k, v in rows[0].items() if k != "sample_seed"}
    for k in out:
        vals = [r.get(k) for r in rows]
        if k not in KEYS and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vals):
            out[k] = statistics.fmean(vals)
    for k in SPREAD_METRICS:  # the same statistics as `ldlm frontier`'s seed_spread, flattened into the point's row
        spread = metric_spread(rows, k)
        if spread is not None and sum(r.get(k) is not None for r in rows) > 1:
            out[f"{k}_std"] = spread["std"]
    out["sample_seeds"] = [r["sample_seed"] for r in rows]
    return out


def markdown(res: dict, header: bool = True) -> str:
    """The frontier table of a frontier.json (data row first, every point in sweep order) and its matches;
    with `header`, the machine and command lines first."""
    m = res["machine"]
    lines = [f"Machine: {B.describe_machine(m)}; {m['date']}, commit {m['commit']}.", "",
             f"Command: `{m['command']}`", ""] if header else []
    notes = res.get("notes") or []
    lines += [f"Note: {n}" for n in notes] + ([""] if notes else [])
    seeds = res.get("sample_seeds") or [res.get("sample_seed", 0)]
    if len(seeds) > 1:
        lines += [f"Each point: the mean ± sample std over sampling seeds {', '.join(map(str, seeds))} "
                  f"({res['num']} samples each; ms/sample: the mean).", ""]
    lines += [B.evaluator_caption((res.get("eval_settings") or {}).get("evaluator"), res.get("protocol")), "",
              "| model | setting | gen-PPL | entropy | MAUVE | distinct-2 (set) | ms/sample |",
              "|---|---|---|---|---|---|---|"]
    cols = (("gen_ppl", "{:.1f}"), ("entropy", "{:.3f}"), ("mauve", "{:.3f}"), ("distinct2_set", "{:.3f}"))
    d = res.get("data") or {}
    lines.append(f"| data | {d.get('num', res['num'])} held-out passages | "
                 + " | ".join(_cell(d.get(k), f) for k, f in cols) + " | |")
    for r in res["rows"]:
        lines.append(f"| {r['algo'].upper()} | {r['label']} | "
                     + " | ".join(_cell(r.get(k), f, r.get(f"{k}_std")) for k, f in cols)
                     + f" | {r['sec_per_sample'] * 1000:.1f} |")
    h = res.get("headline") or {}
    lines += ["", f"Matches (entropy tolerance {h.get('entropy_tol')}):", ""]
    if h.get("status") == "ok":
        lines.append(f"- at LDLM's best ({h['ldlm']['label']}, gen-PPL {h['ldlm']['gen_ppl']:.1f}, entropy "
                     f"{h['ldlm']['entropy']:.3f}): MDLM reaches it at ~{h['mdlm']['steps']:.0f} steps, "
                     + ratio_text(h, "LDLM's time"))
    elif h:
        lines.append(f"- at LDLM's best: {headline_message(h)}")
    if h.get("at_mdlm_best"):
        lines.append(f"- {converse_message(h['at_mdlm_best'])}")
    for other in BASELINES:
        if h.get(f"vs_{other}"):
            lines.append(f"- {baseline_message(h[f'vs_{other}']['at_ldlm_best'], other)}")
            lines.append(f"- {converse_message(h[f'vs_{other}'][f'at_{other}_best'], other)}")
    return "\n".join(lines) + "\n"


def plot(path: Path, rows: list[dict], data: dict | None, h: dict, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    colors = {"ldlm": "tab:blue", "mdlm": "tab:orange", "ar": "tab:green", "tencdm": "tab:purple"}
    pts = [r for r in rows if r.get("gen_ppl") is not None]
    for algo in colors:
        along = "temperature" if algo == "ar" else "steps"
        curves = _curves([r for r in pts if r["algo"] == algo], along)
        for gi, (knobs, line) in enumerate(curves.items()):
            alpha = 0.35 + 0.65 * (gi + 1) / len(curves)
            ax.plot([r["entropy"] for r in line], [r["gen_ppl"] for r in line], marker="o", ms=4, color=colors[algo],
                    alpha=alpha, label=f"{algo.upper()} {label(dict(knobs))}")
            if any("gen_ppl_std" in r for r in line):  # points averaged over sampling seeds: their spread
                ax.errorbar([r["entropy"] for r in line], [r["gen_ppl"] for r in line], fmt="none", ecolor=colors[algo],
                            alpha=alpha, xerr=[r.get("entropy_std", 0) for r in line],
                            yerr=[r.get("gen_ppl_std", 0) for r in line], elinewidth=0.8, capsize=2)
            for r in line:
                ax.annotate(f"{label({along: r.get(along)})} {r['sec_per_sample'] * 1000:.0f}ms",
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
        txt = "MDLM at LDLM's best quality: " + ratio_text(h, "LDLM's time")
    else:
        txt = headline_message(h)
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
        (out / "frontier.md").write_text(markdown(res), encoding="utf-8")
        return res
    out.mkdir(parents=True, exist_ok=True)
    runs = {"ldlm": a.ldlm, "mdlm": a.mdlm, "ar": a.ar, "tencdm": a.tencdm}
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
    vocabs = {k: c.model.readout_vocab for k, c in cfgs.items()}
    if len(set(vocabs.values())) > 1:
        notes.append(f"WARNING: the runs' output vocabularies differ {vocabs} (model.readout_vocab); not the same "
                     f"treatment for every model")
    refs, refs_b, note = build_references("valid", cfgs["ldlm"], a.num, [], a.seed)
    ev = make_evaluation(a.eval_lm, refs, refs_b, note, seed=a.seed, device=device, batch_size=16, threads=a.threads)
    prev, prev_seed_rows = {}, []
    jpath = out / "frontier.json"
    if jpath.exists() and not a.fresh:
        try:
            old = json.loads(jpath.read_text())
            prev = {(r["algo"], r["label"]): r for r in old.get("rows", [])
                    if r.get("num") == a.num and r["algo"] in runs
                    and r.get("checkpoint") == str(ck.resolve_checkpoint(runs[r["algo"]]))
                    and r.get("sample_seeds", [old.get("sample_seed", 0)]) == a.sample_seeds}
            prev_seed_rows = [r for r in old.get("seed_rows", []) if (r["algo"], r["label"]) in prev]
        except (ValueError, KeyError, OSError):
            prev, prev_seed_rows = {}, []
    t0 = time.time()
    if a.timing_repeats <= 0:
        notes.append("--timing-repeats 0: the sweep ran beside other jobs; its ms/sample and time ratios are not speed "
                     "measurements")
    res = {"benchmark": "frontier", "protocol": PROTOCOL, "quick": a.quick, "machine": B.machine_info(device),
           "runs": runs, "num": a.num, "sample_seeds": a.sample_seeds, "eval_settings": ev.settings, "notes": notes,
           "data": ev.data_row(), "rows": [], **({"seed_rows": prev_seed_rows} if len(a.sample_seeds) > 1 else {})}
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
                generate(model, num=min(a.num, 8), seed=a.sample_seeds[0], **s)
                warmed = True
            per_seed = []
            for seed in a.sample_seeds:
                recs = generate(model, num=a.num, seed=seed, **s)
                name = lab.replace(" ", "_") + (f"-seed{seed}" if len(a.sample_seeds) > 1 else "")
                write_samples(recs, samples_dir / f"{algo}-{name}.jsonl")
                per_seed.append({"algo": algo, "label": lab, **s, "sample_seed": seed, "checkpoint": ckpt,
                                 "sec_per_sample": recs[0]["sec_per_sample"],
                                 "sample_batch_size": model.cfg.sample.batch_size,
                                 **ev.evaluate([r["text"] for r in recs], desc=f"scoring {algo} {lab} seed {seed}")})
            if len(per_seed) > 1:
                res["seed_rows"] += per_seed
                row = seed_mean(per_seed)
            else:
                row = {k: v for k, v in per_seed[0].items() if k != "sample_seed"} | {"sample_seeds": a.sample_seeds}
            res["rows"].append(row)
            B.log(f"{algo:5s} {format_table({lab: row}).splitlines()[1]} {row['sec_per_sample'] * 1000:8.1f} ms/sample")
            B.write_json(jpath, res)  # after every point: an interrupted sweep keeps what it finished
            write_csv(out / "frontier.csv", res["rows"])
        del model
        gc.collect()
    h = headline(res["rows"], res["data"], a.entropy_tol, a.ldlm_best)
    h["at_mdlm_best"] = at_mdlm_best(res["rows"], res["data"], a.entropy_tol, a.ppl_tol)
    timed = {"mdlm"} if "ok" in (h.get("status"), h["at_mdlm_best"].get("status")) else set()
    for other in BASELINES:
        if other in runs:
            h[f"vs_{other}"] = {"at_ldlm_best": at_ldlm_best_discrete(res["rows"], res["data"], a.entropy_tol, other),
                                f"at_{other}_best": at_best(res["rows"], res["data"], a.entropy_tol, a.ppl_tol, other)}
            if any(m.get("status") == "ok" for m in h[f"vs_{other}"].values()):
                timed.add(other)
    timed &= set(runs)
    if timed and a.timing_repeats > 0:
        models = {k: load_model(runs[k], device=device) for k in ("ldlm", *sorted(timed))}
        retime(h, models, a)
        del models
    elif a.timing_repeats <= 0:  # a sweep run beside other jobs measures no speed: its matches carry no ratio
        for m in (h, h["at_mdlm_best"], *(v for o in BASELINES for v in h.get(f"vs_{o}", {}).values())):
            m["untimed"] = True
        h.pop("ratio_lower_bound_from_sweep", None)
    res["headline"] = h
    res["wall_s"] = time.time() - t0
    B.write_json(jpath, res)
    (out / "frontier.md").write_text(markdown(res), encoding="utf-8")
    write_csv(out / "frontier.csv", [{"algo": "data", "label": "data", **(res["data"] or {})}] + res["rows"])
    plot(out / "frontier.png", res["rows"], res["data"], h, plot_title(res, a.eval_lm))
    if h.get("status") == "ok":
        msg = (f"headline: LDLM {h['ldlm']['label']} (gen-PPL {h['ldlm']['gen_ppl']:.1f}, entropy "
               f"{h['ldlm']['entropy']:.2f}) vs MDLM {label(settings_of({**h['mdlm'], 'steps': None}))} at "
               f"~{h['mdlm']['steps']:.0f} steps: MDLM takes " + ratio_text(h, "LDLM's time"))
    else:
        msg = f"headline: {headline_message(h)}"
    B.log(msg)
    B.log(converse_message(h["at_mdlm_best"]))
    for other in BASELINES:
        if f"vs_{other}" in h:
            B.log(baseline_message(h[f"vs_{other}"]["at_ldlm_best"], other))
            B.log(converse_message(h[f"vs_{other}"][f"at_{other}_best"], other))
    B.log(f"written: {jpath}, frontier.csv, frontier.png ({res['wall_s']:.0f} s)")
    return res


if __name__ == "__main__":
    main()
