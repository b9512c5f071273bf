"""Quality–diversity frontier: sample a grid of settings from one checkpoint and score each one.

    ldlm frontier --ckpt runs/tiny --steps 10,25,50,100 --noise-scale 0.7,0.85,1.0 --num 128 --out runs/tiny/frontier

writes one samples file per setting, frontier.csv / frontier.json (all metrics, the data row first)
and frontier.png (gen-PPL against entropy, the data point marked, ms/sample beside each point).
The model, the evaluator LM and the reference features are loaded once for the whole grid. Which
settings are swept is generic: any of `SWEEPABLE` (LDLM: steps, noise scale, decode temperature, solver;
MDLM: steps, temperature, top-p; AR: temperature, top-p).
"""
from __future__ import annotations

import csv
import itertools
import json
import os
from pathlib import Path

from .config import boolean
from .errors import UserError

# sampling setting -> (type, short name used in labels and file names)
SWEEPABLE = {"steps": (int, "S"), "noise_scale": (float, "ns"), "decode_temperature": (float, "dT"),
             "decode_iters": (int, "K"),
             "round_below": (float, "rb"), "round_temperature": (float, "rT"),
             "readout_contrast": (float, "ct"), "stop_mass": (float, "sm"), "mean_guidance": (float, "mg"),
             "lexicon": (boolean, "lex"), "lexicon_beam": (int, "lb"),
             "temperature": (float, "T"), "top_p": (float, "p"), "solver": (str, "")}
CSV_METRICS = ["gen_ppl", "entropy", "mauve", "distinct1_set", "distinct2_set", "distinct3_set",
               "distinct1_within", "distinct2_within", "distinct3_within", "rep4", "mean_words", "mean_tokens",
               "tokens_scored", "num", "unique_texts", "mauve_prefix"]


def parse_list(text: str, typ: type, flag: str) -> list:
    try:
        values = [typ(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--{flag} must be a comma list of {typ.__name__} values, e.g. 10,25,50; got {text!r}") from None
    if not values:
        raise UserError(f"--{flag} is empty; give a comma list of values")
    return values


# setting: (another setting, its value at which the first does nothing, the first's off value). A sweep keeps only
# the off value there: the other combinations would sample the same texts under other labels.
INERT = {"round_temperature": ("round_below", 0.0, 0.0),  # the rounding readout's temperature without rounding
         "lexicon_beam": ("lexicon", False, 8)}  # the lexicon's beam width without the lexicon (8: the default)


def drop_inert(settings: list[dict]) -> list[dict]:
    """`settings` without those that set a knob where it has no effect (INERT) to anything but its off value."""
    return [s for s in settings if not any(k in s and s.get(other) == at and s[k] != off
                                           for k, (other, at, off) in INERT.items())]


def sweep_grid(args) -> list[dict]:
    """The cartesian product of every setting given as a list, in the order given (inert combinations dropped)."""
    lists = {k: parse_list(getattr(args, k), typ, k.replace("_", "-"))
             for k, (typ, _) in SWEEPABLE.items() if getattr(args, k, None)}
    if not lists:
        raise UserError("give at least one list to sweep: --steps, --noise-scale, --decode-temperature, --decode-iters, "
                        "--round-below, --round-temperature, --readout-contrast, --stop-mass, --mean-guidance, --lexicon, --lexicon-beam, "
                        "--temperature, --top-p or --solver")
    return drop_inert([dict(zip(lists, combo)) for combo in itertools.product(*lists.values())])


def label_of(setting: dict, seed: int | None = None) -> str:
    """'S25 ns1.2', or 'S25 ns1.2 seed1' for one of several sampling seeds."""
    return " ".join([f"{SWEEPABLE[k][1]}{v}" for k, v in setting.items()] + ([f"seed{seed}"] if seed is not None else []))


SPREAD_METRICS = ("gen_ppl", "entropy", "mauve", "distinct2_set", "mauve_prefix")  # the last if asked for


def metric_spread(rows: list[dict], metric: str) -> dict | None:
    """A metric over the draws of one setting (`rows`, one per sampling seed): mean, sample std (0 for one draw),
    min and max; None where no row has it. Both frontier tools report a setting's spread through this."""
    import statistics

    v = [r[metric] for r in rows if r.get(metric) is not None]
    if not v:
        return None
    return {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0, "min": min(v), "max": max(v)}


def seed_spread(rows: list[dict], keys: list[str]) -> list[dict]:
    """Per setting sampled at several seeds: each metric's mean, sample std and range over the seeds."""
    by: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["label"] != "data":
            by.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = []
    for combo, rs in by.items():
        setting = dict(zip(keys, combo))
        row = {"label": label_of(setting), **setting, "seeds": [r["sample_seed"] for r in rs]}
        for m in SPREAD_METRICS:
            if (spread := metric_spread(rs, m)) is not None:
                row[m] = spread
        out.append(row)
    return out


def format_spread(spread: list[dict]) -> str:
    metrics = [m for m in SPREAD_METRICS if m != "mauve_prefix" or any(m in r for r in spread)]
    head = "| setting | seeds | " + " | ".join(metrics) + " |"
    lines = [head, "|" + "---|" * (2 + len(metrics))]
    for r in spread:
        cells = [f"{r[m]['mean']:.3f} ± {r[m]['std']:.3f} ({r[m]['min']:.3f}–{r[m]['max']:.3f})" if m in r else ""
                 for m in metrics]
        lines.append(f"| {r['label']} | {len(r['seeds'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_table(path: Path, rows: list[dict], keys: list[str]) -> None:
    cols = ["label", *keys, "sec_per_sample", *CSV_METRICS]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in cols})


def plot_frontier(path: Path, rows: list[dict], keys: list[str], title: str) -> None:
    """gen-PPL (log) against entropy; points joined along `steps` (or the first swept key)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    pts = [r for r in rows if r["label"] != "data" and r.get("gen_ppl") is not None]
    along = "steps" if "steps" in keys else keys[0]
    groups: dict[tuple, list[dict]] = {}
    for r in pts:
        groups.setdefault(tuple((k, r[k]) for k in keys if k != along), []).append(r)
    for g, rs in groups.items():
        rs = sorted(rs, key=lambda r: r[along])
        g = dict(g)
        name = label_of({k: v for k, v in g.items() if k in SWEEPABLE}, g.get("sample_seed")) or "samples"
        ax.plot([r["entropy"] for r in rs], [r["gen_ppl"] for r in rs], marker="o", label=name)
        for r in rs:
            ax.annotate(f"{SWEEPABLE[along][1]}{r[along]}, {r['sec_per_sample'] * 1000:.0f} ms", (r["entropy"], r["gen_ppl"]),
                        textcoords="offset points", xytext=(5, 4), fontsize=7)
    data = next((r for r in rows if r["label"] == "data" and r.get("gen_ppl") is not None), None)
    if data:
        ax.scatter([data["entropy"]], [data["gen_ppl"]], marker="*", s=220, c="k", zorder=5, label="data")
        ax.annotate("data", (data["entropy"], data["gen_ppl"]), textcoords="offset points", xytext=(6, -10))
    ax.set_yscale("log")
    ax.set_xlabel("entropy (nats, evaluator tokens)")
    ax.set_ylabel("generative perplexity")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run_frontier(args) -> list[dict]:
    from .checkpoint import write_text_atomic
    from .evaluation import PROTOCOL, build_references, format_table, make_evaluation
    from tqdm import tqdm

    from .generate import generate, load_model, sample_settings, write_samples

    grid = sweep_grid(args)  # bad lists fail before anything slow is loaded
    keys = list(grid[0])
    seeds = parse_list(str(args.sample_seed), int, "sample-seed")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"--sample-seed lists a seed twice ({args.sample_seed}); give distinct seeds")
    if args.num <= 0:
        raise UserError(f"--num must be a positive number of samples, got {args.num}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(args.ckpt, device=args.device)
    for setting in grid:  # a flag this model's sampler does not read fails now, before the evaluator loads
        sample_settings(model, num=args.num, **setting)
    device = str(next(model.parameters()).device)
    refs, refs_b, note = build_references(args.reference or "valid", model.cfg, args.num, [], args.seed)
    ev = make_evaluation(args.eval_lm, refs, refs_b, note, seed=args.seed, device=device,
                         batch_size=args.batch_size, max_tokens=args.max_tokens, threads=args.threads,
                         prefix_words=args.mauve_prefix_words)
    rows = [{"label": "data", **(ev.data_row() or {})}]
    meta = {"protocol": PROTOCOL, "checkpoint": model.checkpoint, "algo": model.cfg.algo, "num": args.num,
            "sample_seed": seeds if len(seeds) > 1 else seeds[0], "swept": keys, "settings": ev.settings}
    generate(model, num=min(args.num, 8), seed=seeds[0], **grid[0])  # warm-up: one-time costs out of sec/sample
    runs = [(setting, seed) for setting in grid for seed in seeds]
    table_keys = keys + (["sample_seed"] if len(seeds) > 1 else [])
    bar = tqdm(runs, desc="frontier", unit="setting", dynamic_ncols=True, disable=os.environ.get("LDLM_QUIET") == "1")
    spread = []
    for setting, seed in bar:
        label = label_of(setting, seed if len(seeds) > 1 else None)
        bar.set_postfix_str(label)
        records = generate(model, num=args.num, seed=seed, progress=True, **setting)
        write_samples(records, out / f"samples-{label.replace(' ', '_')}.jsonl")
        row = {"label": label, **setting, "sample_seed": seed, "sec_per_sample": records[0]["sec_per_sample"],
               **ev.evaluate([r["text"] for r in records], desc=f"scoring {label}")}
        rows.append(row)
        tqdm.write(format_table({label: row}).splitlines()[1] + f" {row['sec_per_sample'] * 1000:8.1f} ms/sample")
        # written after every setting, so an interrupted sweep keeps what it finished
        write_table(out / "frontier.csv", rows, table_keys)
        spread = seed_spread(rows, keys) if len(seeds) > 1 else []
        write_text_atomic(out / "frontier.json", json.dumps({**meta, "rows": rows, **({"seed_spread": spread} if spread else {})},
                                                            indent=1) + "\n")
    print(format_table({r["label"]: r for r in rows}))
    if spread:
        print(f"\nover {len(seeds)} sampling seeds (mean ± sample std (min–max)):")
        print(format_spread(spread))
    if any(r.get("gen_ppl") is not None for r in rows[1:]):
        from .evaluator import evaluator_name

        title = (f"{model.cfg.algo} {Path(model.checkpoint).name}, {args.num} samples/point, "
                 f"evaluator {evaluator_name(ev.settings['evaluator'])}")
        plot_frontier(out / "frontier.png", rows, table_keys, title)
        print(f"written: {out}/frontier.csv, frontier.json, frontier.png")
    else:
        print(f"written: {out}/frontier.csv, frontier.json (no plot: gen-PPL unavailable)")
    return rows
