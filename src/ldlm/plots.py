"""PNG plots of a run: training curves and the adaptive timestep density."""
from __future__ import annotations

import json
import os
from pathlib import Path


def _records(run_dir: Path) -> list[dict]:
    """Every readable line of the run's metrics.jsonl (a line cut by a crash is skipped)."""
    f = Path(run_dir) / "metrics.jsonl"
    if not f.is_file():
        return []
    out = []
    for line in f.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def read_metrics(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """(training log lines, validation lines) of a run, events left out."""
    train, valid = [], []
    for r in _records(run_dir):
        if "event" in r:
            continue
        (valid if r.get("split") == "valid" else train).append(r)
    return train, valid


def read_events(run_dir: Path) -> list[dict]:
    """The run's event lines (start, resume, skipped, stopped, ...), in order."""
    return [r for r in _records(run_dir) if "event" in r]


def save_png(fig, path: Path, dpi: int = 100) -> None:
    """Temp file + rename: a reader (or a kill mid-write) never sees a half-written PNG."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        fig.savefig(tmp, format="png", dpi=dpi)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        import matplotlib.pyplot as plt

        plt.close(fig)  # also on failure: plots are redrawn at every evaluation, leaked figures would pile up


def plot_training(run_dir: Path) -> list[Path]:
    """Write curves.png (losses vs step) and, if logged, timesteps.png; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    train, valid = read_metrics(run_dir)
    if not train:
        return []
    keys = [k for k in ("loss", "diff", "dec_ce", "dec_mse", "read_ce", "latent_cos", "w_enc") if k in train[-1]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    steps = [r["step"] for r in train]
    for k in keys:
        axes[0].plot(steps, [r.get(k, float("nan")) for r in train], label=k)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_title("training")
    axes[0].legend(fontsize=8)
    vkeys = [k for k in ("diff", "diff_trivial", "recon_acc", "dec_ce", "loss") if valid and k in valid[-1]]
    for k in vkeys:
        axes[1].plot([r["step"] for r in valid], [r[k] for r in valid], marker="o", label=k)
    axes[1].set_xlabel("step")
    axes[1].set_title("validation")
    if vkeys:  # a run stopped before its first evaluation has none yet
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    out = [run_dir / "curves.png"]
    save_png(fig, out[0])
    dens = [r for r in valid if "t_density" in r]
    if dens:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        picks = dens[:: max(1, len(dens) // 5)]
        if picks[-1] is not dens[-1]:
            picks.append(dens[-1])
        for r in picks:
            ax.plot(r["t_centres"], r["t_density"], label=f"step {r['step']}")
        ax.set_xlabel("t")
        ax.set_ylabel("density")
        ax.set_title("training timestep density")
        ax.legend(fontsize=8)
        fig.tight_layout()
        out.append(run_dir / "timesteps.png")
        save_png(fig, out[-1])
    return out
