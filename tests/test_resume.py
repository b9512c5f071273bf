"""Exact kill-and-resume, SIGTERM saves, non-finite-loss skipping and OOM reporting."""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
MICRO = str(ROOT / "configs" / "micro.yaml")
STEPS = 14


def overrides(cache: Path) -> list[str]:
    return [f"train.steps={STEPS}", "train.batch_size=8", "train.log_every=1", "train.save_every=3",
            "train.eval_every=0", "train.keep_last=2", "train.threads=1", f"data.cache_dir={cache}"]


def launch(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "LDLM_QUIET": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "ldlm", "train", "--quiet", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def losses(run: Path) -> dict[int, dict]:
    out = {}
    for ln in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(ln)
        if "event" not in rec and "split" not in rec:
            out[rec["step"]] = {k: v for k, v in rec.items() if k not in ("tok_s", "elapsed")}
    return out


def wait_for(pred, timeout=120.0, proc=None):
    t0 = time.time()
    while not pred():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.communicate()}")
        if time.time() - t0 > timeout:
            raise AssertionError("timed out")
        time.sleep(0.05)


def last_step(run: Path, after: str) -> int:
    """The last training step logged after the latest `after` event ("start"/"resume"); 0 before one."""
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    seen, step = False, 0
    for ln in lines:
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError:
            continue
        if rec.get("event") == after:
            seen, step = True, 0
        elif seen and "event" not in rec and "split" not in rec:
            step = rec["step"]
    return step


def test_sigkill_then_sigterm_then_resume_reproduces_losses_exactly(tmp_path):
    cache = tmp_path / "cache"
    ref = tmp_path / "ref"
    # the uninterrupted reference trains beside the interrupted run (one thread each; they share the feature cache,
    # which is safe across processes): the test's longest wait is no longer two runs end to end
    ref_p = launch(["--config", MICRO, "--out", str(ref), *overrides(cache)], tmp_path)

    run = tmp_path / "run"
    # 1. SIGKILL at a random step after the first checkpoint exists, early enough that training is
    #    still running (a time-based delay let a fast machine finish all 14 steps first)
    target = random.Random(os.getpid()).randint(3, 7)
    p = launch(["--config", MICRO, "--out", str(run), *overrides(cache)], tmp_path)
    wait_for(lambda: (run / "latest").exists() and last_step(run, "start") >= target, proc=p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    killed_at = int((run / "latest").read_text().strip().split("-")[1])
    assert 3 <= killed_at < STEPS

    # 2. resume, then SIGTERM: it must save a checkpoint at the step it stopped and exit 128 + 15
    p = launch(["--out", str(run), "--resume"], tmp_path)
    # the killed run may have logged past its last checkpoint: wait for a step that the *resumed*
    # process logged (after its "resume" event), so the signal lands inside training
    wait_for(lambda: last_step(run, "resume") > killed_at, proc=p)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM received: stopped at step" in err and "--resume" in err
    stopped = int(err.split("stopped at step ")[1].split(";")[0])
    assert (run / "latest").read_text().strip() == f"ckpt-{stopped:06d}"

    # 3. resume to the end
    p = launch(["--out", str(run), "--resume"], tmp_path)
    assert p.wait(timeout=300) == 0, p.communicate()

    assert ref_p.wait(timeout=300) == 0, ref_p.communicate()
    a, b = losses(ref), losses(run)
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
    for step in a:
        for k in ("loss", "diff", "dec_ce", "grad_norm", "lr"):
            assert a[step][k] == b[step][k], (step, k, a[step][k], b[step][k])  # bit-exact
    assert not list(run.glob(".*tmp*"))
    assert len(list(run.glob("ckpt-*"))) == 2  # keep_last


# ---------------------------------------------------------------- faults (in-process)
def _trainer(tmp_path, **extra):
    from ldlm.config import load_config
    from ldlm.trainer import Trainer

    ov = overrides(tmp_path / "cache") + [f"{k}={v}" for k, v in extra.items()]
    return Trainer(load_config(MICRO, ov), str(tmp_path / "run"), quiet=True)


def _hashes(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_nonfinite_loss_is_skipped_then_repeated_ones_stop_the_run(tmp_path):
    from ldlm.errors import UserError

    tr = _trainer(tmp_path, **{"train.steps": 12, "train.max_bad_steps": 3})
    real = tr.model.loss
    bad = {4, 7, 8, 9}  # step indices (0-based) whose loss is NaN: one isolated, then three in a row

    def loss(batch, step):
        out, logs = real(batch, step)
        return (out * float("nan"), {**logs, "loss": float("nan")}) if step in bad else (out, logs)

    tr.model.loss = loss
    with pytest.raises(UserError) as e:
        tr.train()
    msg = str(e.value)
    assert "training stopped at step 10" in msg and "3 steps in a row" in msg and "ckpt-000006" in msg
    run = tmp_path / "run"
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    skipped = [r["step"] for r in recs if r.get("event") == "skipped"]
    assert skipped == [5, 8, 9, 10]
    # the weights stayed finite and the last good checkpoint is complete and loadable
    assert all(torch.isfinite(p).all() for p in tr.model.parameters())
    assert all(math.isfinite(v) for v in tr.model.extra_state()["timesteps.ema"].tolist())
    assert (run / "latest").read_text().strip() == "ckpt-000006"
    before = _hashes(run / "ckpt-000006")
    from ldlm.generate import load_model

    load_model(run, device="cpu")
    assert _hashes(run / "ckpt-000006") == before


def test_out_of_memory_names_the_batch_size(tmp_path):
    from ldlm.errors import UserError

    tr = _trainer(tmp_path)

    def loss(batch, step):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    tr.model.loss = loss
    with pytest.raises(UserError, match=r"out of CPU memory at step 0 with train.batch_size=8 sequences of 32"):
        tr.train()
