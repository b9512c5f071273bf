"""Speed and memory of LDLM, MDLM and AR at matched parameter counts and sequence length.

Sampling time per sample and tokens/s over step counts (LDLM: reverse-diffusion steps; MDLM:
ancestral steps, with and without its row cache; AR: one left-to-right pass with a KV cache), at
batch 1 and batch 32, after warm-up runs, repeated (median, quartiles, min/max); training step time
and tokens/s; peak memory per measurement (CPU: peak RSS of the process, reset before each
measurement, so it includes the resident model; CUDA: max_memory_allocated).

    .venv/bin/python bench/speed.py --quick                   # about a minute; prints one JSON object
    .venv/bin/python bench/speed.py                           # full: bench/results/speed.json, .png, .md
    .venv/bin/python bench/speed.py --ckpt-ldlm runs/tiny --ckpt-mdlm runs/tiny-mdlm --ckpt-ar runs/tiny-ar

Without checkpoints the models have random weights (sampling cost does not depend on the weights,
except AR, which stops when every row has ended: random weights run to the full length, the worst
case). Timed: `model.generate_ids` (network + token choice), not detokenisation. Sampling runs in
fp32 (as `ldlm sample` does); training uses the config's bf16 autocast, through the trainer's own step.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("LDLM_QUIET", "1")

import benchlib as B  # noqa: E402

FULL = {"ldlm": [10, 25, 50, 100, 200], "mdlm": [16, 64, 256, 1024], "mdlm_nocache": [16, 64, 256, 1024],
        "batches": [1, 32], "repeats": 5, "warmup": 1, "min_time": 1.0, "max_time": 60.0,
        "train_warmup": 2, "train_steps": 10}
QUICK = {"ldlm": [10, 50], "mdlm": [16, 64], "mdlm_nocache": [16], "batches": [1, 32], "repeats": 2, "warmup": 1,
         "min_time": 0.0, "max_time": 5.0, "train_warmup": 1, "train_steps": 2}
QUICK_MAX_PASSAGES = 512  # --quick trains on this many passages (feature cache in seconds, not ~a minute)
QUICK_VALID_FRACTION = 0.1  # ... and holds out this share, so tiny.yaml's batch of 32 fits (data.check_corpus_size)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="few settings and repeats; prints one JSON object")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    for algo, cfg in (("ldlm", "tiny.yaml"), ("mdlm", "tiny-mdlm.yaml"), ("ar", "tiny-ar.yaml")):
        p.add_argument(f"--config-{algo}", default=str(B.ROOT / "configs" / cfg), help=f"{algo} config (random weights)")
        p.add_argument(f"--ckpt-{algo}", help=f"trained {algo} run folder instead of random weights")
    p.add_argument("--algos", default="ldlm,mdlm,ar", help="comma list of models to measure")
    p.add_argument("--batches", help="comma list of sampling batch sizes (default 1,32)")
    p.add_argument("--repeats", type=int, help="timed runs per setting (default 5; --quick 2)")
    p.add_argument("--ldlm-steps", help="comma list (default 10,25,50,100,200)")
    p.add_argument("--mdlm-steps", help="comma list, with the cache (default 16,64,256,1024)")
    p.add_argument("--mdlm-nocache-steps", help="comma list, without the cache (default 16,64,256,1024; '' = none)")
    p.add_argument("--train-steps", type=int, help="timed training steps (default 10; --quick 2)")
    p.add_argument("--no-train", action="store_true", help="skip the training-step measurement")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override applied to every model (e.g. data.max_passages=2000)")
    p.add_argument("--out", help="JSON path (default bench/results/speed.json; --quick prints only)")
    p.add_argument("--report", metavar="JSON", help="only re-render the Markdown table (speed.md) of a saved speed.json")
    return p.parse_args(argv)


def _ints(text, default):
    if text is None:
        return list(default)
    return [int(x) for x in text.split(",") if x.strip()]


def make_trainer(algo: str, args, device: str, cfg=None):
    """A Trainer (random weights, prepared corpus) from --config-ALGO, or from a checkpoint's config."""
    from ldlm.config import config_from_dict, load_config, parse_overrides, set_key, validate
    from ldlm.trainer import Trainer

    over = [f"train.device={device}", f"train.threads={args.threads}", *args.set]
    if args.quick and not any(s.startswith("data.max_passages") for s in args.set):
        over.append(f"data.max_passages={QUICK_MAX_PASSAGES}")
        if not any(s.startswith("data.valid_fraction") for s in args.set):  # 2 % of 512 is no evaluation batch
            over.append(f"data.valid_fraction={QUICK_VALID_FRACTION}")
    if cfg is None:
        cfg = load_config(getattr(args, f"config_{algo}"), over)
    else:
        cfg = config_from_dict(cfg.to_dict())
        for k, v in parse_overrides(over):
            set_key(cfg, k, v)
        validate(cfg)
    if cfg.algo != algo:
        sys.exit(f"--config-{algo} {getattr(args, f'config_{algo}')} is an algo={cfg.algo} config")
    return Trainer(cfg, tempfile.mkdtemp(prefix=f"speed-{algo}-"), quiet=True)


def build(algo: str, args, device: str):
    """(config, sampling model, trainer or None). Random weights come from a Trainer (it prepares
    the corpus, so LDLM's readout covers the corpus vocabulary as in a real run)."""
    from ldlm.generate import load_model

    ckpt = getattr(args, f"ckpt_{algo}")
    if ckpt:
        model = load_model(ckpt, device=device)
        if model.cfg.algo != algo:
            sys.exit(f"--ckpt-{algo} {ckpt} holds an algo={model.cfg.algo} model")
        return model.cfg, model, None
    tr = make_trainer(algo, args, device)
    return tr.cfg, tr.model.eval(), tr


def param_counts(model) -> dict:
    from ldlm.blocks import count_params

    out = model.param_counts()  # trainable, embedding, non_embedding, frozen; then trainable per part
    for part in ("encoder", "denoiser", "decoder", "readout", "net"):
        if hasattr(model, part):
            out[part] = count_params(getattr(model, part))
    return out


def sampling_settings(algo: str, plan: dict) -> list[dict]:
    if algo == "ldlm":
        return [{"steps": s, "solver": "sde", "noise_scale": 1.0} for s in plan["ldlm"]]
    if algo == "mdlm":
        return ([{"steps": s, "cache": True} for s in plan["mdlm"]]
                + [{"steps": s, "cache": False} for s in plan["mdlm_nocache"]])
    return [{"steps": None, "kv_cache": True}]


def measure_sampling(algo, model, cfg, plan, device) -> list[dict]:
    import torch

    from ldlm.generate import sample_settings

    rows = []
    L = cfg.data.seq_len
    for setting in sampling_settings(algo, plan):
        for b in plan["batches"]:
            over = {k: v for k, v in setting.items() if k in ("steps", "solver", "noise_scale", "cache") and v is not None}
            sc = sample_settings(model, num=b, batch_size=b, **over)
            g = torch.Generator().manual_seed(0)
            fn = lambda: model.generate_ids(b, sc, g, device)  # noqa: E731
            B.reset_peak(device)
            base = B.current_mb(device)
            times = B.time_runs(fn, device, plan["warmup"], plan["repeats"], plan["min_time"], plan["max_time"])
            per = B.summary([t / b for t in times])
            row = {"algo": algo, **setting, "batch": b, "seq_len": L, "sec_per_sample": per,
                   "sec_per_batch": B.summary(times), "tokens_per_s": L / per["median"],
                   "tokens_per_s_iqr": [L / per["q3"], L / per["q1"]],
                   "resident_mb": base, **B.peak_mb(device)}
            if algo == "mdlm" and setting.get("cache"):
                row["net_rows_per_sample"] = model.rows_computed / b  # network passes per sequence (last run)
            rows.append(row)
            B.log(f"  sample {algo} {setting} batch {b}: {per['median'] * 1000:.2f} ms/sample "
                  f"(IQR {per['q1'] * 1000:.2f}-{per['q3'] * 1000:.2f}, n={per['n']}), "
                  f"{row['tokens_per_s']:.0f} tok/s, peak {row['peak_mb']:.0f} MB")
    return rows


def mid_run(trainer) -> None:
    """Put a fresh trainer mid-run: training mode, half-way through its schedule (the warmup weight and every
    recipe path active), logs off as on the steps between log lines (no accuracy argmax)."""
    trainer.model.train()
    trainer.step = trainer.cfg.train.steps // 2
    trainer.model.step_logs = False


def measure_training(algo, trainer, plan, device) -> dict:
    """The trainer's own optimizer step (forward, backward, clip, AdamW, EMA), mid-run (the
    warmup weight and every recipe path active), on the config's batch."""
    cfg = trainer.cfg
    mid_run(trainer)
    B.reset_peak(device)
    base = B.current_mb(device)

    def one():
        trainer._step()
        trainer.step += 1

    times = B.time_runs(one, device, plan["train_warmup"], plan["train_steps"], 0.0, float("inf"),
                        max_repeats=plan["train_steps"])
    s = B.summary(times)
    tokens = trainer.global_batch * cfg.data.seq_len
    row = {"algo": algo, "batch": trainer.global_batch, "seq_len": cfg.data.seq_len, "bf16": cfg.train.bf16,
           "step_s": s, "tokens_per_s": tokens / s["median"], "tokens_per_s_iqr": [tokens / s["q3"], tokens / s["q1"]],
           "resident_mb": base, **B.peak_mb(device)}
    B.log(f"  train {algo} batch {row['batch']}: {s['median']:.3f} s/step (IQR {s['q1']:.3f}-{s['q3']:.3f}), "
          f"{row['tokens_per_s']:.0f} tok/s, peak {row['peak_mb']:.0f} MB")
    return row


def plot(path: Path, res: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [2, 1]})
    colors = {"ldlm": "C0", "mdlm": "C1", "ar": "C2"}
    rows = res["sampling"]
    batches = sorted({r["batch"] for r in rows})
    styles = {b: ls for b, ls in zip(batches, ["-", "--", ":", "-."])}
    all_steps = [r["steps"] for r in rows if r["steps"]]
    for algo in ("ldlm", "mdlm", "ar"):
        for b in batches:
            for cache in (True, False, None):
                rs = [r for r in rows if r["algo"] == algo and r["batch"] == b and r.get("cache") is cache]
                if not rs:
                    continue
                med = [r["sec_per_sample"]["median"] * 1000 for r in rs]
                lo = [m - r["sec_per_sample"]["q1"] * 1000 for m, r in zip(med, rs)]
                hi = [r["sec_per_sample"]["q3"] * 1000 - m for m, r in zip(med, rs)]
                name = f"{algo}{'' if cache is None else (' cached' if cache else ' uncached')}, batch {b}"
                if algo == "ar":
                    ax.axhline(med[0], color=colors[algo], ls=styles[b], label=f"AR (KV cache, one pass), batch {b}")
                    continue
                ax.errorbar([r["steps"] for r in rs], med, yerr=[lo, hi], color=colors[algo], ls=styles[b],
                            marker="o" if cache is not False else "x", capsize=2, label=name,
                            alpha=1.0 if cache is not False else 0.6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    if all_steps:
        ax.set_xticks(sorted(set(all_steps)), [str(s) for s in sorted(set(all_steps))])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("sampling steps")
    ax.set_ylabel("ms per sample (median, IQR)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    m = res["machine"]
    ax.set_title(f"sampling, L={rows[0]['seq_len'] if rows else '?'}; {m.get('gpu') or m['cpu']}, "
                 f"{m['torch_threads']} threads", fontsize=9)
    tr = res.get("training") or []
    if tr:
        names = [r["algo"] for r in tr]
        med = [r["tokens_per_s"] for r in tr]
        err = [[v - r["tokens_per_s_iqr"][0] for v, r in zip(med, tr)],
               [r["tokens_per_s_iqr"][1] - v for v, r in zip(med, tr)]]
        bx.bar(names, med, yerr=err, color=[colors[n] for n in names], capsize=3)
        bx.set_ylabel("training tokens/s (median, IQR)")
        bx.set_title(f"training step, batch {tr[0]['batch']} x {tr[0]['seq_len']}", fontsize=9)
    else:
        bx.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _ms(s: dict) -> str:
    return f"{s['median'] * 1000:.1f} [{s['q1'] * 1000:.1f}–{s['q3'] * 1000:.1f}]"


def markdown(res: dict, header: bool = True) -> str:
    """The sampling and training tables of a speed.json, as Markdown (medians with the IQR); with
    `header`, the machine and command lines first."""
    m = res["machine"]
    lines = [f"Machine: {B.describe_machine(m)}; {m['date']}, commit {m['commit']}; load average at start "
             f"{m.get('loadavg_1_5_15')}, at end {m.get('loadavg_end')}.", "",
             f"Command: `{m['command']}`", ""] if header else []
    lines += ["| model | setting | batch | ms/sample, median [IQR] | tokens/s | peak memory (MB) |",
             "|---|---|---|---|---|---|"]
    for r in res["sampling"]:
        if r["algo"] == "ldlm":
            setting = f"{r['steps']} steps, {r['solver']}"
        elif r["algo"] == "mdlm":
            setting = f"{r['steps']} steps, cache {'on' if r.get('cache') else 'off'}"
        else:
            setting = "one pass, KV cache"
        lines.append(f"| {r['algo'].upper()} | {setting} | {r['batch']} | {_ms(r['sec_per_sample'])} | "
                     f"{r['tokens_per_s']:.0f} | {r['peak_mb']:.0f} |")
    if res["training"]:
        lines += ["", "| model | training step, batch | s/step, median [IQR] | tokens/s | peak memory (MB) |",
                  "|---|---|---|---|---|"]
        for r in res["training"]:
            s = r["step_s"]
            lines.append(f"| {r['algo'].upper()} | {r['batch']} × {r['seq_len']}{', bf16' if r.get('bf16') else ''} | "
                         f"{s['median']:.3f} [{s['q1']:.3f}–{s['q3']:.3f}] | {r['tokens_per_s']:.0f} | {r['peak_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    import json

    import torch

    args = parse_args(argv)
    if args.report:
        res = json.loads(Path(args.report).read_text())
        Path(args.report).with_suffix(".md").write_text(markdown(res), encoding="utf-8")
        return res
    threads = B.set_threads(args.threads)
    device = B.pick_device(args.device)
    base = QUICK if args.quick else FULL
    plan = dict(base, ldlm=_ints(args.ldlm_steps, base["ldlm"]), mdlm=_ints(args.mdlm_steps, base["mdlm"]),
                mdlm_nocache=_ints(args.mdlm_nocache_steps, base["mdlm_nocache"]),
                batches=_ints(args.batches, base["batches"]))
    if args.repeats:
        plan["repeats"] = args.repeats
    if args.train_steps:
        plan["train_steps"] = args.train_steps
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    t0 = time.time()
    res = {"benchmark": "speed", "quick": args.quick, "machine": B.machine_info(device), "plan": plan,
           "models": {}, "sampling": [], "training": [],
           "notes": ["sec_per_sample = time of model.generate_ids for a batch / batch size (fp32, no detokenisation)",
                     "tokens_per_s = batch x seq_len / time (positions produced; AR with random weights runs to full length)",
                     "CPU peak_mb is the process peak RSS within the measurement (includes the resident model, "
                     "and for LDLM the frozen LM, which sampling does not use; models are measured in one process, so "
                     "a later model's peak can include memory the allocator kept from an earlier one: run --algos X "
                     "alone for a clean figure)"]}
    seq_lens = set()
    for algo in algos:
        B.log(f"{algo}: building")
        cfg, model, trainer = build(algo, args, device)
        seq_lens.add(cfg.data.seq_len)
        res["models"][algo] = {"params": param_counts(model), "seq_len": cfg.data.seq_len,
                               "config": getattr(args, f"config_{algo}") if trainer else None,
                               "checkpoint": getattr(model, "checkpoint", None),
                               "weights": "trained (EMA)" if trainer is None else "random"}
        with torch.no_grad():
            res["sampling"] += measure_sampling(algo, model, cfg, plan, device)
        if not args.no_train:
            if trainer is None:
                del model
                gc.collect()
                trainer = make_trainer(algo, args, device, cfg)
            res["training"].append(measure_training(algo, trainer, plan, device))
        model = trainer = None  # free before the next model is built
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    if len(seq_lens) > 1:
        res["notes"].append(f"WARNING: the models have different sequence lengths {sorted(seq_lens)}; not comparable")
    res["wall_s"] = time.time() - t0
    res["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    res["machine"]["torch_threads"] = threads
    if args.quick and not args.out:
        print(json.dumps(res))
        return res
    out = Path(args.out) if args.out else B.RESULTS / "speed.json"
    B.write_json(out, res)
    plot(out.with_suffix(".png"), res)
    out.with_suffix(".md").write_text(markdown(res), encoding="utf-8")
    B.log(f"written: {out}, {out.with_suffix('.png')}, {out.with_suffix('.md')} ({res['wall_s']:.0f} s)")
    return res


if __name__ == "__main__":
    main()
