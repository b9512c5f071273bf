"""The recipe ablation: LDLM trained with the same budget and seed, one recipe component at a time.

    .venv/bin/python bench/ablation.py                                # configs/tiny.yaml, its steps
    .venv/bin/python bench/ablation.py --steps 400 --only full,naive  # a smaller budget, a subset
    .venv/bin/python bench/ablation.py --quick                        # smoke test on configs/micro.yaml
    .venv/bin/python bench/ablation.py --suite paper                  # the paper's recipe against the old defaults
    .venv/bin/python bench/ablation.py --suite levers --sample-steps 25  # quality levers, one change each

Suites: 'ablation' (below) and 'paper': the old defaults (before the paper's settings were known), the
paper's recipe (`recipe=paper`), and each of its items alone on top of the old defaults (MSE-only latent
decoder with a separate token decoder, absolute Gaussian decoder-input noise at several std, sigmoid
warmup, the frozen LM's third-to-last layer, tan-3 schedule, the log-SNR sampling grid -- the last one
re-samples the old defaults' checkpoint). Writes bench/results/paper-recipe.{md,json}.

Variants: full; naive (all four components off); full minus each component (MSE decoder loss -> CE;
no diffusion-to-encoder warmup; uniform timesteps; no decoder-input noise); two-stage (TEncDM/COSMOS:
autoencoder alone for --two-stage of the steps, then the denoiser alone on frozen latents; the rest
of the full recipe unchanged); paper (the paper's recipe as published, `recipe=paper`: "full" is the
project's default recipe, which keeps token CE through the latent decoder, BENCHMARKS §5); a second seed
of full and naive, so seed noise is visible.

Each run: train (runs/ablation/<variant>), sample with fixed settings, evaluate with `ldlm eval`'s
protocol (gen-PPL, entropy, MAUVE, distinct-n; one evaluator for all runs) and read the last
validation line of metrics.jsonl (diff, diff_ratio, recon_acc, latent_cos, latent_erank).
Resumable: a variant whose run folder holds a finished evaluation (ablation-eval.json) is skipped, an
interrupted training is resumed. Writes bench/results/ablation.md and ablation.json.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("LDLM_QUIET", "1")

import benchlib as B  # noqa: E402


# the recipe the ablation and levers suites were run with, spelled out (it was the library default throughout), so
# that a later change of a config's own recipe keys cannot move their rows or their finished runs; every suite was
# run with the full softmax in training (tiny.yaml's sampled one came after them)
FULL_SOFTMAX = ["recipe.softmax_negatives=0"]
RECIPE_BASE = ["recipe.decoder_loss=mse+ce", *FULL_SOFTMAX]


def variants(seed: int, two_stage: float) -> dict[str, tuple[str, list[str]]]:
    """name -> (what changes, config overrides); every variant's overrides start from RECIPE_BASE."""
    return {k: (c, RECIPE_BASE + o) for k, (c, o) in _variants(seed, two_stage).items()}


def _variants(seed: int, two_stage: float) -> dict[str, tuple[str, list[str]]]:
    s2 = f"train.seed={seed + 1}"
    return {
        "full": ("full recipe", []),
        "naive": ("naive joint training (all four off)", ["recipe=naive"]),
        "ce-decoder": ("full - MSE decoder loss (token CE only)", ["recipe.decoder_loss=ce"]),
        "no-warmup": ("full - diffusion-to-encoder warmup (w = 1 from step 0)",
                      ["recipe.warmup=ramp", "recipe.warmup_start=0", "recipe.warmup_ramp=0"]),
        "uniform-t": ("full - adaptive timesteps (t ~ U)", ["recipe.timesteps=uniform"]),
        "no-dec-noise": ("full - decoder-input noise", ["recipe.dec_noise_std=0", "recipe.dec_noise_max=0"]),
        "two-stage": (f"two-stage: autoencoder {two_stage:.0%} of steps, then frozen", [f"recipe.two_stage={two_stage}"]),
        # the paper's definitions (MSE-only latent decoder, sigmoid warmup, sigma_dec = 3, tan-3, LM layer -3); it
        # collapsed at 500 steps (BENCHMARKS §5), so the longer re-tests run it beside the project's full recipe
        "paper": ("the paper's recipe as published (recipe=paper)", ["recipe=paper"]),
        # its collapse at 500 and 2000 steps came as the warmup handed the encoder to L_diff while the MSE-only
        # decoder still reconstructed ~14 %: give the autoencoder most of a 2000-step run alone first
        "paper-warmup-1600": ("the paper's recipe, its sigmoid warmup over 1600 steps", ["recipe=paper",
                                                                                         "recipe.warmup_steps=1600"]),
        "full-seed2": (f"full recipe, seed {seed + 1}", [s2]),
        "naive-seed2": (f"naive, seed {seed + 1}", ["recipe=naive", s2]),
    }


# the defaults before the paper's settings were known (MSE + CE through one decoder, noise in time units,
# linear warmup, tan-9, last layer, uniform sampling grid), spelled out so later default changes cannot move it
OLD_DEFAULTS = ["recipe.decoder_loss=mse+ce", "recipe.dec_noise=schedule", "recipe.dec_noise_max=0.15",
                "recipe.warmup=ramp", "model.schedule_d=9", "model.lm_layer=-1", "model.tok_dec_layers=0",
                "sample.grid=uniform"]


def paper_variants(seed: int, two_stage: float) -> dict[str, tuple[str, list[str]]]:
    """The 'paper' suite: name -> (what changes, config overrides). A name with '@' re-samples the run
    named before the '@' with the sampling overrides of this entry (no training)."""
    s2 = f"train.seed={seed + 1}"
    old = OLD_DEFAULTS
    rows = {
        "old-defaults": ("the old defaults", old),
        "paper": ("recipe=paper (all of the below, sigma_dec = 3)", ["recipe=paper", "sample.grid=logsnr"]),
        "old-defaults@logsnr": ("old defaults' checkpoint, log-SNR sampling grid", old + ["sample.grid=logsnr"]),
        "mse-tokdec": ("+ MSE-only latent decoder, token decoder on stopgrad(h_hat)", old + ["recipe.decoder_loss=mse"]),
        "mse-tokdec2": ("+ MSE-only latent decoder, 2-layer token decoder",
                        old + ["recipe.decoder_loss=mse", "model.tok_dec_layers=2"]),
        "sigmoid-warmup": ("+ sigmoid warmup (k = 10, c = 0.8)", old + ["recipe.warmup=sigmoid"]),
        "lm-layer-3": ("+ frozen LM layer -3", old + ["model.lm_layer=-3"]),
        "tan-3": ("+ tan-3 schedule", old + ["model.schedule_d=3"]),
        "paper-seed2": (f"recipe=paper, seed {seed + 1}", ["recipe=paper", "sample.grid=logsnr", s2]),
        "old-defaults-seed2": (f"the old defaults, seed {seed + 1}", old + [s2]),
        # conditional training (prompts/infilling) must not cost unconditional quality: the same run with a
        # quarter of the sequences trained with a given prefix/suffix, sampled unconditionally
        "cond-0.25": ("+ conditional training, recipe.cond_prob = 0.25", old + ["recipe.cond_prob=0.25"]),
    }
    for std in (0.5, 1, 2, 3):
        rows[f"dec-noise-{std:g}"] = (f"+ Gaussian decoder-input noise, std {std:g}",
                                      old + ["recipe.dec_noise=gaussian", f"recipe.dec_noise_std={std:g}"])
    # sigma_dec = 3 against unit-variance latents leaves ~1.2 bits per token at tiny's 16 latent dimensions per
    # token (the paper has 96): the paper's recipe with the noise scaled down
    for std in (0.5, 1):
        rows[f"paper-std{std:g}"] = (f"recipe=paper with sigma_dec = {std:g}",
                                     ["recipe=paper", "sample.grid=logsnr", f"recipe.dec_noise_std={std:g}"])
        rows[f"paper-std{std:g}-seed2"] = (f"recipe=paper with sigma_dec = {std:g}, seed {seed + 1}",
                                           ["recipe=paper", "sample.grid=logsnr", f"recipe.dec_noise_std={std:g}", s2])
    return {k: (c, FULL_SOFTMAX + o) for k, (c, o) in rows.items()}


# the base of the 'levers' suite: configs/tiny.yaml as it was when the suite ran (d = 64; it is 32 since)
LEVER_BASE = RECIPE_BASE + ["model.latent_dim=64"]


def lever_variants(seed: int, two_stage: float) -> dict[str, tuple[str, list[str]]]:
    """The 'levers' suite (quality at the CPU budget): the base, then one change each to the denoiser's
    target, the noise schedule, the latent shape, the denoiser's capacity, the batch/steps split and
    self-conditioning. Run it with the config's own sampling steps (--sample-steps 25 for tiny)."""
    s2 = f"train.seed={seed + 1}"
    rows = {
        "base": ("tiny.yaml with d = 64 (its setting before this suite)", []),
        "base-seed2": (f"the base, seed {seed + 1}", [s2]),
        "stopgrad-target": ("L_diff's target z0 without gradient (no moving-target pull)", ["recipe.diff_target_stopgrad=true"]),
        "tan-3": ("tan-3 noise schedule (less time at high noise)", ["model.schedule_d=3"]),
        "latent-d32": ("latent width d = 32 (half)", ["model.latent_dim=32"]),
        "latent-d32-seed2": (f"latent width d = 32, seed {seed + 1}", ["model.latent_dim=32", s2]),
        "latent-d16": ("latent width d = 16 (a quarter)", ["model.latent_dim=16"]),
        "latent-d32-1000": ("latent width d = 32, 1000 steps (twice the budget)", ["model.latent_dim=32", "train.steps=1000"]),
        "latent-n24": ("N = 24 latents (compression 2)", ["model.latent_len=24"]),
        "den-8x384": ("denoiser 8 blocks of width 384", ["model.den_layers=8", "model.den_width=384"]),
        "batch64": ("batch 64, half the steps (same sequences seen)", ["train.batch_size=64", "train.steps=250"]),
        "no-self-cond": ("no self-conditioning", ["model.self_cond_prob=0"]),
        "uniform-t": ("uniform timesteps", ["recipe.timesteps=uniform"]),
        # the readout is 56 % of tiny's step FLOPs (bench/flops.py) and L_read on the frozen LM's states is half of
        # it: a quarter of the rows cuts the step's FLOPs by a fifth, if the token decoder keeps its anchor
        "read-0.25": ("L_read on a quarter of the batch's rows", ["recipe.read_fraction=0.25"]),
        # the ablation's ce-decoder row had better samples than the full recipe at 500 (d = 64, two seeds) and 2000
        # steps (d = 32), and it drops L_read and the MSE: the readout's cost halves
        "ce-decoder": ("latent decoder trained by token CE alone (no MSE, no L_read)", ["recipe.decoder_loss=ce"]),
        # twice the steps helped entropy and MAUVE (latent-d32-1000) but costs twice the time; the same sequences
        # in smaller batches buy the steps at (nearly) the same cost
        "batch16": ("batch 16, twice the steps (same sequences seen)", ["train.batch_size=16", "train.steps=1000"]),
        # the decoder reads latents noised up to s_max (0.15: alpha >= 0.42 under tan-9); more noise makes it read
        # the sampler's imperfect latents better, at some cost to reconstruction
        "dec-noise-0.3": ("decoder-input noise up to s = 0.3 (twice)", ["recipe.dec_noise_max=0.3"]),
        # the vocabulary-wide softmax of the two training CEs is over half a step's FLOPs: over the batch's targets
        # and 1024 sampled tokens instead (log-Q corrected; evaluation and sampling keep the full softmax)
        "softmax-1024": ("training CEs over the batch's targets + 1024 sampled tokens",
                         ["recipe.softmax_negatives=1024"]),
        "softmax-1024-seed2": (f"training CEs over targets + 1024 sampled tokens, seed {seed + 1}",
                               ["recipe.softmax_negatives=1024", s2]),
        # the sampled softmax halves the step's time: 700 steps (40 % more sequences) fit the demo's 10 minutes
        "softmax-1024-700": ("sampled softmax (1024), 700 steps", ["recipe.softmax_negatives=1024", "train.steps=700"]),
        "softmax-1024-700-seed2": (f"sampled softmax (1024), 700 steps, seed {seed + 1}",
                                   ["recipe.softmax_negatives=1024", "train.steps=700", s2]),
        # the same pull on the demo's recipe (sampled softmax), sampled as the demo samples (levers-d32-round)
        "softmax-1024-w3": ("sampled softmax (1024), diffusion gradient into the encoder at weight 3",
                            ["recipe.softmax_negatives=1024", "recipe.w_max=3"]),
        "softmax-1024-w3-seed2": (f"sampled softmax (1024), diffusion gradient at weight 3, seed {seed + 1}",
                                  ["recipe.softmax_negatives=1024", "recipe.w_max=3", s2]),
        # the diffusion loss's pull on the encoder, three times as strong: latents the denoiser can predict better
        "w-max-3": ("diffusion gradient into the encoder at weight 3 (after the warmup)", ["recipe.w_max=3"]),
    }
    return {k: (c, LEVER_BASE + o) for k, (c, o) in rows.items()}


def shape_variants(seed: int, two_stage: float) -> dict[str, tuple[str, list[str]]]:
    """The 'shapes' suite, for the baselines (--config configs/tiny-ar.yaml or tiny-mdlm.yaml): the same
    kind of search the levers suite gave LDLM -- one change each to the width, the depth and the
    batch/steps split, and a second seed of the base -- so that no model is compared at a shape only
    its rival's was tuned for. Sampled at the config's own settings (T = 1)."""
    s2 = f"train.seed={seed + 1}"
    return {
        "base": ("the config as is (width 256, 6 blocks)", []),
        "base-seed2": (f"the base, seed {seed + 1}", [s2]),
        "wide": ("width 384 (6 heads of 64)", ["model.width=384", "model.heads=6"]),
        "narrow": ("width 128 (4 heads of 32)", ["model.width=128"]),
        "deep": ("10 blocks", ["model.layers=10"]),
        "shallow": ("3 blocks", ["model.layers=3"]),
        "batch64": ("batch 64, half the steps (same sequences seen)", ["train.batch_size=64", "train.steps=250"]),
    }


SUITES = {"ablation": (variants, "ablation"), "paper": (paper_variants, "paper-recipe"),
          "levers": (lever_variants, "levers"), "shapes": (shape_variants, "shapes")}
BASELINE_ALGOS = ("ar", "mdlm")  # the algorithms the shapes suite is for (its keys are model.width/layers)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="ablation", choices=sorted(SUITES), help="which set of variants")
    p.add_argument("--quick", action="store_true", help="smoke test: configs/micro.yaml, 32 samples, 10 sampling steps")
    p.add_argument("--config", help="base LDLM config (default configs/tiny.yaml; --quick configs/micro.yaml)")
    p.add_argument("--steps", type=int, help="training steps of every run (default: the config's)")
    p.add_argument("--only", help="comma list of variants to run (default all)")
    p.add_argument("--seed", type=int, default=0, help="training seed (the second-seed rows use seed + 1)")
    p.add_argument("--two-stage", type=float, default=0.5, help="share of steps for the two-stage run's stage 1")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    p.add_argument("--num", type=int, help="samples per run (default 256; --quick 32)")
    p.add_argument("--sample-steps", type=int, help="sampling steps (default 50; --quick 10)")
    p.add_argument("--noise-scale", type=float, default=1.0)
    p.add_argument("--round-below", type=float, default=0.0,
                   help="sample.round_below of every LDLM row (default 0: the suites' rows were sampled without rounding)")
    p.add_argument("--solver", default="sde", choices=["sde", "ode"])
    p.add_argument("--sample-seed", type=int, default=0)
    p.add_argument("--eval-lm", help="evaluator (default smollm2, offline)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--runs", help="folder of the run folders (default runs/ablation; --quick bench/results/quick/ablation-runs)")
    p.add_argument("--out", help="output folder (default bench/results; --quick bench/results/quick)")
    a = p.parse_args(argv)
    a.config = a.config or str(B.ROOT / "configs" / ("micro.yaml" if a.quick else "tiny.yaml"))
    a.num = a.num or (32 if a.quick else 256)
    a.sample_steps = a.sample_steps or (10 if a.quick else 50)
    a.variants, a.name = SUITES[a.suite]
    if a.suite == "shapes":  # one results file per baseline config: shapes-tiny-ar.json, shapes-tiny-mdlm.json
        a.name = f"shapes-{Path(a.config).stem}"
    a.runs = Path(a.runs or (B.RESULTS / "quick" / f"{a.name}-runs" if a.quick else B.ROOT / "runs" / a.name))
    a.out = Path(a.out or (B.RESULTS / "quick" if a.quick else B.RESULTS))
    return a


config_diff = B.config_diff  # (tests use it from here)


def variant_config(overrides: list[str], a, device: str):
    """The config of one variant: --config, then --seed, the variant's overrides, --steps, --set."""
    from ldlm.config import load_config

    # --seed first, so the second-seed rows' own train.seed override wins
    over = [f"train.seed={a.seed}", *overrides] + ([f"train.steps={a.steps}"] if a.steps else []) + \
        [f"train.threads={a.threads}", f"train.device={device}", *a.set]
    return load_config(a.config, over)


def run_variant(name: str, overrides: list[str], a, device: str) -> Path:
    """Train (or resume, or skip if finished) one variant; returns its run folder."""
    cfg = variant_config(overrides, a, device)
    base = name.split("@")[0]
    missing = (f"[{name}] needs the run '{base}' first: list it before '{name}' in --only") if "@" in name else None
    B.log(f"[{name}] {' '.join(overrides) or '(defaults)'}")
    return B.train_run(cfg, a.runs / base, name, missing=missing)


def evaluate_run(name: str, run: Path, ev, a, grid: str | None = None) -> dict:
    from ldlm.generate import generate, load_model, write_samples

    model = load_model(run, device=a.device_resolved)
    t0 = time.time()
    if model.cfg.algo in BASELINE_ALGOS:  # the baselines sample at their config's own settings
        recs = generate(model, num=a.num, seed=a.sample_seed)
    else:
        recs = generate(model, num=a.num, steps=a.sample_steps, noise_scale=a.noise_scale, solver=a.solver,
                        seed=a.sample_seed, grid=grid, round_below=a.round_below)
    sample_s = time.time() - t0
    write_samples(recs, run / f"ablation-samples{'-' + name.split('@')[1] if '@' in name else ''}.jsonl")
    row = ev.evaluate([r["text"] for r in recs], desc=f"scoring {name}")
    stats = B.train_stats(run)
    counts = model.param_counts()
    params = {"trainable": counts["embedding"] + counts["non_embedding"], **counts}
    out = {"variant": name, "run": str(run), "checkpoint": model.checkpoint, "seed": model.cfg.train.seed, "params": params,
           "steps": model.cfg.train.steps, "recipe": model.cfg.to_dict()["recipe"], "sample_s": sample_s,
           "sec_per_sample": recs[0]["sec_per_sample"], "grid": recs[0].get("grid"), "metrics": row, **stats}
    del model
    gc.collect()
    return out


# ---------------------------------------------------------------- report
def _f(v, fmt):
    return "n/a" if v is None else fmt.format(v)


COLS = [("gen-PPL", lambda r: r["metrics"].get("gen_ppl"), "{:.1f}"),
        ("entropy", lambda r: r["metrics"].get("entropy"), "{:.3f}"),
        ("MAUVE", lambda r: r["metrics"].get("mauve"), "{:.3f}"),
        ("distinct-2 (set)", lambda r: r["metrics"].get("distinct2_set"), "{:.3f}"),
        ("unique", lambda r: r["metrics"].get("unique_texts"), "{}"),
        ("val diff", lambda r: r.get("valid", {}).get("diff"), "{:.4f}"),
        ("diff / trivial", lambda r: r.get("valid", {}).get("diff_ratio"), "{:.3f}"),
        ("recon acc", lambda r: r.get("valid", {}).get("recon_acc"), "{:.3f}"),
        ("latent cos", lambda r: r.get("valid", {}).get("latent_cos"), "{:.3f}"),
        ("latent erank", lambda r: r.get("valid", {}).get("latent_erank"),
         "{:.3f}"),
        ("train min", lambda r: (r.get("train_wall_s") or 0) / 60 if r.get("train_wall_s") else None, "{:.1f}")]
# the paper suite adds the held-out denoising error as a share of the mean predictor's at fixed alpha, and speed
PAPER_COLS = COLS[:4] + [COLS[7], COLS[9]] + [
    (f"den/triv a={a}", (lambda k: lambda r: r.get("valid", {}).get(k))(f"den_ratio_a{a[2:]}"), "{:.3f}")
    for a in ("0.80", "0.50", "0.30", "0.20")] + [
    ("train tok/s", lambda r: r.get("train_tok_s_median"), "{:.0f}"), COLS[10]]
# the shapes suite (AR, MDLM): the held-out loss the LR sweep picks by (AR NLL, MDLM NELBO, nats per token)
SHAPE_COLS = COLS[:5] + [
    ("val loss", lambda r: r.get("valid", {}).get("loss"), "{:.4f}"),
    ("val PPL", lambda r: r.get("valid", {}).get("ppl"), "{:.1f}"),
    ("trainable M", lambda r: r["params"]["trainable"] / 1e6 if r.get("params") else None, "{:.2f}"),
    ("non-emb M", lambda r: r["params"]["non_embedding"] / 1e6 if r.get("params") else None, "{:.2f}"),
    ("train tok/s", lambda r: r.get("train_tok_s_median"), "{:.0f}"), COLS[10]]


def seed_noise(rows: dict, cols=None) -> list[str]:
    """One line per pair of seeds run: the sample and validation columns of both."""
    cols = cols or COLS[:4] + COLS[5:10]
    lines = []
    # every suite names a second seed of variant X "X-seed2"
    for b in rows:
        a = b[:-len("-seed2")] if b.endswith("-seed2") else None
        if a in rows and b in rows:
            parts = []
            for name, get, fmt in cols:
                x, y = get(rows[a]), get(rows[b])
                if x is not None and y is not None:
                    parts.append(f"{name} {fmt.format(x)} / {fmt.format(y)}")
            lines.append(f"- `{a}` vs `{b}` (two seeds): " + "; ".join(parts))
    return lines


def suite_of(res: dict) -> str:
    """The suite a results file was made by (its `benchmark` is the suite's file name)."""
    bench = res.get("benchmark", "")
    if bench.startswith("shapes-"):
        return "shapes"
    return next((k for k, (_, name) in SUITES.items() if name == bench), "ablation")


def table(res: dict) -> list[str]:
    """The results table: the data row, then every variant run, in the suite's variant order."""
    suite = suite_of(res)
    rows = {r["variant"]: r for r in res["rows"]}
    cols = {"paper": PAPER_COLS, "levers": PAPER_COLS, "shapes": SHAPE_COLS}.get(suite, COLS)
    n_data = 4 if suite in ("paper", "levers") else 5  # the sample-set columns (gen-PPL ... unique) the data row also has
    lines = [B.evaluator_caption((res.get("eval_settings") or {}).get("evaluator"), res.get("protocol")), "",
             "| variant | change | seed | " + " | ".join(c[0] for c in cols) + " |", "|" + "---|" * (len(cols) + 3)]
    data = res.get("data")
    if data:
        lines.append("| data (references) | held-out text | | " + " | ".join(
            _f(get({"metrics": data}), fmt) if i < n_data else "" for i, (_, get, fmt) in enumerate(cols)) + " |")
    for r in _merged_rows(rows, [], SUITES[suite][0](0, res["settings"]["two_stage"])):
        name = r["variant"]
        change = res["changes"].get(name) or (
            f"{res['changes'].get(name[:-len('-seed2')], '?')}, seed {r['seed']}" if name.endswith("-seed2") else "?")
        lines.append(f"| {name} | {change} | {r['seed']} | " + " | ".join(_f(get(r), fmt) for _, get, fmt in cols) + " |")
    return lines


def markdown(res: dict) -> str:
    """The report of a results file: settings, the table, seed noise, what could not be computed."""
    from ldlm.evaluator import evaluator_name

    suite = suite_of(res)
    rows = {r["variant"]: r for r in res["rows"]}
    m = res["machine"]
    title = {"paper": "LDLM: the paper's recipe against the old defaults",
             "levers": "LDLM: quality levers at the CPU budget, one change each",
             "shapes": f"Baseline shapes: `{Path(res['settings']['config']).name}`, one change each"}.get(suite, "LDLM recipe ablation")
    # rows scored by other processes (other --only lists into one --out) keep the command that scored them
    others = sorted({r["command"] for r in rows.values() if r.get("command") and r["command"] != m["command"]})
    lines = [f"# {title}", "",
             f"- command: `{m['command']}`" + (" (its rows; the others by: " + ", ".join(f"`{c}`" for c in others)
                                                + ")" if others else ""),
             f"- machine: {B.describe_machine(m)}; load average at start {m.get('loadavg_1_5_15')}",
             f"- date: {m['date']}; commit {m['commit']}",
             f"- config: `{res['settings']['config']}`, {res['settings']['steps']} training steps per run, "
             f"same data and seed unless the row says otherwise",
             (f"- sampling: {res['settings']['num']} samples at the config's own settings (`sample` section; AR: "
              f"temperature 1, top-p 1; MDLM: its steps, temperature 1), seed {res['settings']['sample_seed']}"
              if suite == "shapes" else
              f"- sampling: {res['settings']['num']} samples, {res['settings']['sample_steps']} steps, solver "
              f"{res['settings']['solver']}, noise scale {res['settings']['noise_scale']}, "
              + (f"rounded below t = {res['settings']['round_below']}, " if res['settings'].get('round_below') else "")
              + f"seed {res['settings']['sample_seed']}"),
             f"- evaluation: protocol {res['protocol']}, evaluator {evaluator_name(res['eval_settings'].get('evaluator'))}, "
             f"references: {res['eval_settings']['references']}",
             "- val columns: last validation pass of the run (EMA weights): " + (
                 "the held-out loss (AR: NLL, MDLM: NELBO, nats per real token; what the LR sweep picks by) and its "
                 "exponential; parameters as `blocks.param_counts` counts them" if suite == "shapes" else
                 "diffusion MSE, its ratio to the input-blind predictor's (1 = learned nothing), token "
                 "reconstruction accuracy of decode(encode(x)), mean cross-sequence latent cosine and effective "
                 "rank across the batch as a share of its maximum (collapse: cosine near 1, rank near 0)"),
             "", *table(res)]
    order = list(SUITES[suite][0](0, res["settings"]["two_stage"]))
    missing = [n for n in order if n not in rows]
    if missing:
        lines += ["", f"Not run: {', '.join(missing)}."]
    noise = seed_noise(rows, SHAPE_COLS[:4] + SHAPE_COLS[5:7] if suite == "shapes" else None)
    if noise:
        lines += ["", "Seed noise (differences smaller than these are not evidence):", *noise]
    na = {f"{n}: {k}: {why}" for n, r in rows.items() for k, why in r["metrics"].get("unavailable", {}).items()}
    if na:
        lines += ["", "n/a:", *sorted(f"- {x}" for x in na)]
    lines += ["", "What it shows: _to be written from the numbers above._", ""]
    return "\n".join(lines)


def write_report(a, res: dict) -> None:
    (a.out / f"{a.name}.md").write_text(markdown(res), encoding="utf-8")
    plot_curves(a.out / f"{a.name}-curves.png", res)


# the panels of the curves plot: validation key, title (a panel is drawn when some row has the key)
CURVE_PANELS = [("recon_acc", "reconstruction accuracy (decode(encode(x)))"),
                ("latent_erank", "latent effective rank (share of max)"),
                ("den_ratio_a30", "denoising error / mean predictor's, alpha = 0.3"),
                ("loss", "validation loss (nats per token)")]


def plot_curves(path: Path, res: dict) -> None:
    """One line per variant over the training steps, one panel per validation figure its rows have."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ldlm.plots import save_png

    rows = [r for r in res["rows"] if r.get("valid_curve")]
    panels = [(k, t) for k, t in CURVE_PANELS if any(k in p for r in rows for p in r["valid_curve"])]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        for r in rows:
            pts = [(p["step"], p[key]) for p in r["valid_curve"] if key in p]
            if pts:
                ax.plot(*zip(*pts), marker=".", label=r["variant"])
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{res['benchmark']}: validation passes, {res['settings']['steps']} steps", fontsize=10)
    fig.tight_layout()
    save_png(fig, path, dpi=110)


def with_second_seeds(allv: dict, names: list[str], seed: int) -> dict:
    """The suite's variants plus a second seed "X-seed2" of any variant X that `names` asks for and the suite
    does not list itself (X's overrides with train.seed = seed + 1), placed right after X."""
    out = {}
    for n, (change, over) in allv.items():
        out[n] = (change, over)
        s2 = f"{n}-seed2"
        if s2 in names and s2 not in allv and "@" not in n:
            out[s2] = (f"{change}, seed {seed + 1}", [*over, f"train.seed={seed + 1}"])
    return out


def _merged_rows(old_rows: dict, new_rows: list, allv: dict) -> list:
    """Earlier rows with this run's rows over them, in the suite's variant order."""
    merged = {**old_rows, **{r["variant"]: r for r in new_rows}}
    order = list(allv)

    def rank(name: str) -> float:  # a second seed the suite does not list goes right after its first
        if name in order:
            return order.index(name)
        base = name[:-len("-seed2")] if name.endswith("-seed2") else None
        return order.index(base) + 0.5 if base in order else len(order)
    return sorted(merged.values(), key=lambda r: rank(r["variant"]))


def main(argv=None) -> dict:
    a = parse_args(argv)
    B.set_threads(a.threads)
    device = B.pick_device(a.device)
    a.device_resolved = device
    names = None if not a.only else [n.strip() for n in a.only.split(",") if n.strip()]
    allv = with_second_seeds(a.variants(a.seed, a.two_stage), names or [], a.seed)
    names = names or list(allv)
    bad = [n for n in names if n not in allv]
    if bad:
        sys.exit(f"unknown variant(s) {bad}; choose from {', '.join(allv)} (or any of them + '-seed2')")
    a.runs.mkdir(parents=True, exist_ok=True)
    a.out.mkdir(parents=True, exist_ok=True)

    from ldlm.config import load_config
    from ldlm.evaluation import PROTOCOL, build_references, make_evaluation

    base = load_config(a.config, ([f"train.steps={a.steps}"] if a.steps else []) + list(a.set))
    if a.suite == "shapes" and base.algo not in BASELINE_ALGOS:
        sys.exit(f"--suite shapes is for the baselines ({', '.join(BASELINE_ALGOS)}); {a.config} is algo "
                 f"'{base.algo}': pass --config configs/tiny-ar.yaml or configs/tiny-mdlm.yaml")
    refs, refs_b, note = build_references("valid", base, a.num, [], 0)
    ev = make_evaluation(a.eval_lm, refs, refs_b, note, seed=0, device=device, batch_size=16, threads=a.threads)
    settings = {"config": a.config, "steps": base.train.steps, "seed": a.seed, "two_stage": a.two_stage,
                "num": a.num, "sample_steps": a.sample_steps, "noise_scale": a.noise_scale, "solver": a.solver,
                "sample_seed": a.sample_seed, "set": a.set, **({"round_below": a.round_below} if a.round_below else {})}
    jpath = a.out / f"{a.name}.json"
    res = {"benchmark": a.name, "protocol": PROTOCOL, "machine": B.machine_info(device), "settings": settings,
           "changes": {n: c for n, (c, _) in allv.items()}, "overrides": {n: o for n, (_, o) in allv.items()},
           "eval_settings": ev.settings, "data": ev.data_row(), "rows": []}
    t0 = time.time()
    merged: list = []
    for name in names:
        change, overrides = allv[name]
        run = run_variant(name, overrides, a, device)
        grid = ([o.split("=", 1)[1] for o in overrides if o.startswith("sample.grid=")] or [None])[-1]  # the last wins
        done = run / f"ablation-eval{'-' + name.split('@')[1] if '@' in name else ''}.json"
        key = {"settings": settings, "checkpoint": str(run / (run / "latest").read_text().strip()), "grid": grid}
        row = None
        if done.exists():
            saved = json.loads(done.read_text())
            if saved.get("key") == key:
                row = saved["row"]
                if "valid_curve" not in row:  # scored before rows kept their curves
                    row["valid_curve"] = B.train_stats(run)["valid_curve"]
        if row is None:
            row = {**evaluate_run(name, run, ev, a, grid), "command": res["machine"]["command"]}
            B.write_json(done, {"key": key, "row": row})
        res["rows"].append(row)
        mt = row["metrics"]
        B.log(f"[{name}] gen-PPL {_f(mt.get('gen_ppl'), '{:.1f}')}, entropy {_f(mt.get('entropy'), '{:.3f}')}, "
              f"MAUVE {_f(mt.get('mauve'), '{:.3f}')}, recon {_f(row.get('valid', {}).get('recon_acc'), '{:.3f}')}")
        # rows of variants not run this time (--only) but finished earlier with the same settings are kept;
        # re-read just before writing, so two processes running other variants into one --out keep each other's
        res["wall_s"] = time.time() - t0
        merged = _merged_rows(B.kept_rows(jpath, settings, "variant"), res["rows"], allv)
        B.write_json(jpath, {**res, "rows": merged})
        write_report(a, {**res, "rows": merged})
    res["rows"] = merged
    B.log(f"written: {jpath}, {a.out / (a.name + '.md')} ({res['wall_s']:.0f} s)")
    return res


if __name__ == "__main__":
    main()
