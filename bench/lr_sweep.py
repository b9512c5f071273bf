"""Equal tuning: the same learning-rate sweep for every model, each picked by its own validation loss.

    .venv/bin/python bench/lr_sweep.py                                   # tiny, tiny-ar, tiny-mdlm x 5e-4,1e-3,2e-3
    .venv/bin/python bench/lr_sweep.py --lrs 5e-4,1e-3,2e-3,4e-3 --seeds 0,1
    .venv/bin/python bench/lr_sweep.py --configs configs/tiny.yaml,configs/tiny-ar-nonemb.yaml,configs/tiny-mdlm-nonemb.yaml \\
        --runs runs/lr-sweep-nonemb --out bench/results/lr-sweep-nonemb.json
    .venv/bin/python bench/lr_sweep.py --report bench/results/lr-sweep.json   # re-render the table only

Every config is trained at every learning rate (and seed) with nothing else changed: the same steps,
batch, warmup and cosine decay (`--steps`/`--set` change them for all runs alike). The score of a run is
its last validation pass (EMA weights, the held-out batches every run of that config sees):

- AR: `nll`, NLL per real token (nats);
- MDLM: `nelbo`, the NELBO per real token (nats, a bound on the NLL; same tokens as AR's);
- LDLM (and TEncDM, its subclass): `objective`, the held-out value of its own training objective,
  L_diff + lambda_ce * CE_dec (+ lambda_dec * MSE_dec unless recipe.decoder_loss=ce) from the
  validation line's `diff`, `dec_ce` and `dec_mse` with the run's recipe weights (L_read, the token
  decoder on the frozen LM's own states, is left out: validation does not compute it). Not
  `diff_ratio` alone: a run whose latents collapse predicts them easily and lowers the diffusion
  loss while reconstruction fails (BENCHMARKS §3.1, naive recipe: 0.28 of the trivial predictor's);
  the decoder terms charge for that. `diff_ratio`, `recon_acc` and `latent_erank` are in the table
  beside it, so a reader can check the pick.

A configuration's score is the mean over seeds; the best learning rate has the lowest. A run that
stops on non-finite losses counts as failed (never best). When a config's best is at an end of the
swept range, the sweep adds the next rate beyond that end (x2 or /2; `--widen K` times at most, default
once), the same rule for every config; if the best is still at the end, the table says so: the optimum
may lie outside it. Resumable: finished runs (a checkpoint at
the last step) are read, not retrained; interrupted ones resume. Writes the JSON (machine, command,
every run) and a Markdown table beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("LDLM_QUIET", "1")

import benchlib as B  # noqa: E402

DEFAULT_CONFIGS = "configs/tiny.yaml,configs/tiny-ar.yaml,configs/tiny-mdlm.yaml"
METRIC = {"ldlm": "objective", "tencdm": "objective", "ar": "nll", "mdlm": "nelbo"}
SHOWN = {"ldlm": ["diff", "diff_ratio", "dec_ce", "dec_mse", "recon_acc", "latent_erank"],
         "tencdm": ["diff", "diff_ratio", "dec_ce"], "ar": ["ppl", "acc"], "mdlm": ["ppl"]}
FORMATS = {"ppl": "{:.1f}", "acc": "{:.3f}", "recon_acc": "{:.3f}", "latent_erank": "{:.3f}"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"comma list of configs (default {DEFAULT_CONFIGS})")
    p.add_argument("--lrs", default="5e-4,1e-3,2e-3", help="comma list of peak learning rates (default 5e-4,1e-3,2e-3)")
    p.add_argument("--seeds", default="0", help="comma list of training seeds; the score is their mean (default 0)")
    p.add_argument("--widen", type=int, default=1, metavar="K",
                   help="when a config's best rate is at an end of the range, add the next rate beyond it (x2 or /2), "
                        "up to K extra rates per config (default 1; 0 = off)")
    p.add_argument("--steps", type=int, help="training steps of every run (default: each config's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--runs", default=str(B.ROOT / "runs" / "lr-sweep"), help="folder of the run folders")
    p.add_argument("--out", default=str(B.RESULTS / "lr-sweep.json"), help="JSON path; the table goes beside it (.md)")
    p.add_argument("--report", metavar="JSON", help="only re-render the Markdown table of a saved sweep")
    return p.parse_args(argv)


def floats(text: str, flag: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        sys.exit(f"--{flag} must be a comma list of numbers, got {text!r}")
    if not values or any(v <= 0 for v in values):
        sys.exit(f"--{flag} must list positive numbers, got {text!r}")
    return values


def score(algo: str, valid: dict, recipe: dict) -> float | None:
    """The single validation scalar a run is ranked by (module doc); None if the line lacks it."""
    if METRIC[algo] != "objective":
        return valid.get(METRIC[algo])
    if any(valid.get(k) is None for k in ("diff", "dec_ce", "dec_mse")):
        return None
    s = valid["diff"] + recipe["lambda_ce"] * valid["dec_ce"]
    if recipe["decoder_loss"] != "ce":  # 'mse' and 'mse+ce' both train on the hidden-state MSE
        s += recipe["lambda_dec"] * valid["dec_mse"]
    return s


def pick_best(runs: list[dict]) -> dict:
    """Per config: mean score over seeds at each LR; the LR with the lowest mean (failed runs excluded;
    an LR with any failed seed is not eligible)."""
    best = {}
    for name in dict.fromkeys(r["config_name"] for r in runs):
        rs = [r for r in runs if r["config_name"] == name]
        lrs = sorted({r["lr"] for r in rs})
        table = {}
        for lr in lrs:
            at = [r for r in rs if r["lr"] == lr]
            scores = [r["score"] for r in at if r["status"] == "ok" and r["score"] is not None]
            if scores and len(scores) == len(at):
                table[lr] = {"mean": statistics.fmean(scores), "min": min(scores), "max": max(scores), "n": len(scores)}
        entry = {"algo": rs[0]["algo"], "metric": METRIC[rs[0]["algo"]], "by_lr": {str(k): v for k, v in table.items()}}
        if table:
            lr = min(table, key=lambda k: table[k]["mean"])
            entry.update(lr=lr, score=table[lr]["mean"], at_edge=len(lrs) > 1 and lr in (lrs[0], lrs[-1]))
        best[name] = entry
    return best


def next_rate(entry: dict) -> float | None:
    """The rate one step beyond the end of the range where a config's best lies (x2 above, /2 below);
    None when the best is inside the range (or there is none)."""
    if not entry.get("at_edge"):
        return None
    swept = sorted(float(k) for k in entry["by_lr"])
    return entry["lr"] * 2 if entry["lr"] == swept[-1] else entry["lr"] / 2


def run_one(cfg_path: str, lr: float, seed: int, a, device: str) -> dict:
    from ldlm.config import load_config
    from ldlm.errors import UserError

    over = [f"train.lr={lr}", f"train.seed={seed}", *([f"train.steps={a.steps}"] if a.steps else []),
            f"train.threads={a.threads}", f"train.device={device}", "train.keep_last=1", *a.set]
    cfg = load_config(cfg_path, over)
    name = Path(cfg_path).stem
    run = Path(a.runs) / name / f"lr{lr:g}-seed{seed}"
    row = {"config": cfg_path, "config_name": name, "algo": cfg.algo, "lr": lr, "seed": seed, "run": str(run),
           "steps": cfg.train.steps}
    try:
        B.train_run(cfg, run, f"{name} lr {lr:g} seed {seed}")
        row["status"] = "ok"
    except UserError as e:  # e.g. stopped on non-finite losses: a failed LR, not a failed sweep
        row["status"] = f"failed: {e}"
    valid = B.last_valid(run)
    if row["status"] == "ok" and valid.get("step") != cfg.train.steps:
        row["status"] = f"failed: no validation at step {cfg.train.steps}"
    row["valid"] = valid
    row["score"] = score(cfg.algo, valid, cfg.to_dict()["recipe"]) if row["status"] == "ok" else None
    from ldlm.plots import read_metrics

    train, _ = read_metrics(run)
    toks = [r["tok_s"] for r in train if "tok_s" in r]
    row["train_wall_s"] = train[-1].get("elapsed") if train else None
    row["train_tok_s_median"] = statistics.median(toks) if toks else None
    return row


# ---------------------------------------------------------------- report
def _f(v, fmt="{:.4f}"):
    return "n/a" if v is None else fmt.format(v)


def summary(res: dict) -> str:
    """The best learning rate of each config, with its score (mean over seeds) at every rate swept."""
    lrs = sorted({*res["settings"]["lrs"], *(r["lr"] for r in res["runs"])})  # with the rates added by --widen
    lines = ["| config | metric | " + " | ".join(f"lr {x:g}" for x in lrs) + " | best lr | at edge of range |",
             "|" + "---|" * (len(lrs) + 4)]
    ran = {(r["config_name"], r["lr"]) for r in res["runs"]}
    for name, b in res["best"].items():
        cells = []
        for x in lrs:
            t = b["by_lr"].get(str(x))
            # an interrupted sweep is not a failure; a rate added by --widen for another config is not swept here
            missing = "failed" if (name, x) in ran else ("not run yet" if x in res["settings"]["lrs"] else "—")
            cell = missing if t is None else (f"{t['mean']:.4f}" + (f" ({t['min']:.4f}–{t['max']:.4f})" if t["n"] > 1
                                                                       else ""))
            cells.append(f"**{cell}**" if t is not None and x == b.get("lr") else cell)
        best = f"{b['lr']:g}" if "lr" in b else "none"
        edge = "" if "lr" not in b else ("yes: the optimum may lie beyond" if b["at_edge"] else "no")
        lines.append(f"| {name} | `{b['metric']}` | " + " | ".join(cells) + f" | {best} | {edge} |")
    return "\n".join(lines) + "\n"


def render(res: dict) -> str:
    m, st = res["machine"], res["settings"]
    lines = ["# Learning-rate sweep", "",
             f"- command: `{m['command']}`",
             f"- machine: {B.describe_machine(m)}; load average at start {m.get('loadavg_1_5_15')}",
             f"- date: {m['date']}; commit {m['commit']}",
             f"- learning rates {', '.join(f'{x:g}' for x in st['lrs'])}; seeds {', '.join(map(str, st['seeds']))}; "
             f"steps {st['steps'] or 'each config’s own'}; overrides {st['set'] or 'none'}",
             "- score: last validation pass (EMA weights); AR `nll`, MDLM `nelbo` (nats per real token), LDLM "
             "`objective` = L_diff + λ_ce·CE_dec (+ λ_dec·MSE_dec), its training objective held out "
             "(bench/lr_sweep.py explains the choice); lower is better; mean over seeds", ""]
    lines += [summary(res), "Every run:", ""]
    for name in res["best"]:
        rs = [r for r in res["runs"] if r["config_name"] == name]
        algo = rs[0]["algo"]
        extra = SHOWN[algo]
        lines += [f"`{rs[0]['config']}` ({algo}, metric `{METRIC[algo]}`):", "",
                  "| lr | seed | status | score | " + " | ".join(extra) + " | train s | tokens/s |",
                  "|" + "---|" * (6 + len(extra))]
        for r in sorted(rs, key=lambda r: (r["lr"], r["seed"])):
            best = "lr" in res["best"][name] and r["lr"] == res["best"][name]["lr"]
            lr = f"**{r['lr']:g}**" if best else f"{r['lr']:g}"
            lines.append(f"| {lr} | {r['seed']} | {r['status']} | {_f(r['score'])} | "
                         + " | ".join(_f(r["valid"].get(k), FORMATS.get(k, "{:.4f}")) for k in extra)
                         + f" | {_f(r.get('train_wall_s'), '{:.0f}')} | {_f(r.get('train_tok_s_median'), '{:.0f}')} |")
        lines.append("")
    return "\n".join(lines)


def write(res: dict, out: Path) -> None:
    B.write_json(out, res)
    out.with_suffix(".md").write_text(render(res), encoding="utf-8")


def main(argv=None) -> dict:
    a = parse_args(argv)
    if a.report:
        res = json.loads(Path(a.report).read_text())
        Path(a.report).with_suffix(".md").write_text(render(res), encoding="utf-8")
        return res
    configs = [c.strip() for c in a.configs.split(",") if c.strip()]
    # the default names are relative to the repository, wherever the script is run from
    configs = [str(B.ROOT / c) if not Path(c).is_file() and (B.ROOT / c).is_file() else c for c in configs]
    missing = [c for c in configs if not Path(c).is_file()]
    if missing:
        sys.exit(f"config(s) not found: {', '.join(missing)}; pass existing YAML files with --configs")
    lrs = floats(a.lrs, "lrs")
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    B.set_threads(a.threads)
    device = B.pick_device(a.device)
    out = Path(a.out)
    res = {"benchmark": "lr-sweep", "machine": B.machine_info(device),
           "settings": {"configs": configs, "lrs": lrs, "seeds": seeds, "steps": a.steps, "set": a.set},
           "metric": METRIC, "runs": [], "best": {}}
    if argv is not None:  # called from Python: record the equivalent command line, not the caller's
        res["machine"]["command"] = " ".join(["bench/lr_sweep.py", *argv])
    t0 = time.time()

    def run_rate(cfg_path, lr):
        for seed in seeds:
            row = run_one(cfg_path, lr, seed, a, device)
            res["runs"].append(row)
            B.log(f"[{row['config_name']} lr {lr:g} seed {seed}] {row['status']}, score {_f(row['score'])}")
            res["best"] = pick_best(res["runs"])
            write(res, out)  # after every run: an interrupted sweep keeps what it finished

    for cfg_path in configs:
        for lr in lrs:
            run_rate(cfg_path, lr)
    for cfg_path in configs:  # the same widening rule for every config: only where the optimum is not bracketed
        for _ in range(a.widen):
            lr = next_rate(res["best"].get(Path(cfg_path).stem, {}))
            if lr is None:
                break
            B.log(f"[{Path(cfg_path).stem}] best rate at the end of the range: adding lr {lr:g}")
            run_rate(cfg_path, lr)
    res["wall_s"] = time.time() - t0
    write(res, out)
    for name, b in res["best"].items():
        B.log(f"{name}: best lr {b.get('lr', 'none')}" + (" (at the edge of the range)" if b.get("at_edge") else ""))
    B.log(f"written: {out}, {out.with_suffix('.md')}")
    return res


if __name__ == "__main__":
    main()
