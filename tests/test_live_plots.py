"""Plots redrawn during training (every evaluation, on SIGTERM), never fatal; optional trackers (train.tracker)."""
from __future__ import annotations

import hashlib
import importlib.machinery
import json
import os
import signal
import sys
import types
from pathlib import Path

import pytest

from ldlm import plots
from ldlm.cli import main
from ldlm.config import load_config
from ldlm.trainer import Trainer, TrainingInterrupted

MICRO = str(Path(__file__).resolve().parents[1] / "configs" / "micro.yaml")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def trainer(cache: Path, out: Path, steps: int, eval_every: int, *extra: str) -> Trainer:
    ov = [f"train.steps={steps}", "train.batch_size=8", "train.log_every=1", f"train.eval_every={eval_every}",
          "train.save_every=0", "train.threads=1", f"data.cache_dir={cache}", *extra]
    return Trainer(load_config(MICRO, ov), str(out), quiet=True)


def events(run: Path) -> list[dict]:
    recs = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if "event" in r]


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_plots_are_redrawn_at_every_evaluation(tmp_path, cache, monkeypatch):
    run = tmp_path / "run"
    tr = trainer(cache, run, steps=8, eval_every=4)
    seen = []
    real = plots.plot_training

    def recording(run_dir):
        written = real(run_dir)
        seen.append((tr.step, [p.name for p in written], digest(run / "curves.png"), digest(run / "timesteps.png")))
        return written

    monkeypatch.setattr(plots, "plot_training", recording)
    tr.train()
    assert [s[0] for s in seen] == [4, 8]  # the first redraw happens mid-run, after the first evaluation
    assert seen[0][1] == ["curves.png", "timesteps.png"]
    assert seen[0][2] != seen[1][2] and seen[0][3] != seen[1][3]  # redrawn with the new points
    assert digest(run / "curves.png") == seen[1][2]
    assert not list(run.glob(".*.tmp*"))  # atomic writes leave no temporary files


def test_sigterm_writes_the_plots(tmp_path, cache, monkeypatch):
    run = tmp_path / "run"
    tr = trainer(cache, run, steps=20, eval_every=0)  # no evaluation before the end: only the stop can plot
    real_step = tr._step

    def step_then_signal():
        out = real_step()
        if tr.step == 2:  # the third step: the handler sees it when the step ends
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(tr, "_step", step_then_signal)
    with pytest.raises(TrainingInterrupted):
        tr.train()
    assert [e["step"] for e in events(run) if e["event"] == "stopped"] == [3]
    assert (run / "curves.png").stat().st_size > 0
    train_steps = [r["step"] for r in plots.read_metrics(run)[0]]
    assert train_steps == [1, 2, 3]


def test_a_plotting_failure_does_not_stop_training(tmp_path, cache, monkeypatch, capsys):
    def broken(run_dir):
        raise RuntimeError("no display")

    monkeypatch.setattr(plots, "plot_training", broken)
    run = tmp_path / "run"
    result = trainer(cache, run, steps=4, eval_every=2).train()
    assert result["step"] == 4 and (run / "ckpt-000004").is_dir()
    failed = [e for e in events(run) if e["event"] == "plot_failed"]
    assert [e["step"] for e in failed] == [2, 4] and "no display" in failed[0]["error"]
    assert "plotting failed at step 2" in capsys.readouterr().err


def test_tracker_not_installed_is_a_one_line_error(tmp_path, cache, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # not importable, whatever this machine has
    out = tmp_path / "run"
    rc = main(["train", "--config", MICRO, "--out", str(out), "--quiet", "train.steps=2",
               f"data.cache_dir={cache}", "train.tracker=tensorboard"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "train.tracker=tensorboard" in err[0] and "pip install tensorboard" in err[0]
    assert not out.exists()  # refused before any work


def test_unknown_tracker_is_refused(tmp_path, capsys):
    rc = main(["train", "--config", MICRO, "--out", str(tmp_path / "run"), "train.tracker=wandb"])
    assert rc == 2 and "train.tracker" in capsys.readouterr().err


def test_trackio_receives_the_metrics(tmp_path, cache, monkeypatch):
    calls = []
    fake = types.ModuleType("trackio")
    fake.__spec__ = importlib.machinery.ModuleSpec("trackio", None)
    fake.init = lambda **kw: calls.append(("init", kw))
    fake.log = lambda metrics, step=None: calls.append(("log", step, metrics))
    fake.finish = lambda: calls.append(("finish",))
    monkeypatch.setitem(sys.modules, "trackio", fake)
    run = tmp_path / "run"
    trainer(cache, run, 4, 2, "train.tracker=trackio").train()
    assert calls[0][0] == "init" and calls[0][1]["project"] == "ldlm" and calls[0][1]["name"] == "run"
    assert calls[0][1]["config"]["train"]["tracker"] == "trackio"
    logs = [c for c in calls if c[0] == "log"]
    assert [c[1] for c in logs if "train/loss" in c[2]] == [1, 2, 3, 4]
    assert [c[1] for c in logs if "valid/diff" in c[2]] == [2, 4]
    assert all(isinstance(v, float) for c in logs for v in c[2].values())
    assert calls[-1] == ("finish",)
