"""Helpers shared by the benchmark scripts: machine description, timing statistics, peak memory."""
from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def set_threads(n: int) -> int:
    """Set torch's CPU threads explicitly (oversubscribed OpenMP threads distort every timing)."""
    if n > 0:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def pick_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda but no CUDA device is visible; use --device cpu")
    return name


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def device_name(device: str) -> str:
    """The processor that computes on `device`: the CPU's model name, or the GPU's."""
    return torch.cuda.get_device_properties(0).name if device.startswith("cuda") else _cpu_model()


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(device: str) -> dict:
    """What a reader needs to judge the numbers: CPU, cores, load, torch, device, date, commit."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {"cpu": _cpu_model(), "cpu_count": os.cpu_count(), "cpus_usable": usable,
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "device": device, "hostname": platform.node(),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "commit": git_commit(),
            "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}
    try:
        info["loadavg_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_memory_gb=round(p.total_memory / 2 ** 30, 1), cuda=torch.version.cuda)
    return info


def evaluator_caption(evaluator: dict | None, protocol: str | None) -> str:
    """The line above a quality table: the evaluator named exactly (results written before
    `eval_lm_name` existed map their `eval_lm` the same way) and the protocol."""
    from ldlm.evaluator import evaluator_name

    return f"Evaluator: {evaluator_name(evaluator)}; protocol `{protocol or '?'}`."


def describe_machine(m: dict) -> str:
    """One line from machine_info(): what a reader needs to weigh a timing."""
    return (f"{m.get('gpu') or m['cpu']}, {m['cpus_usable']} usable cores, {m['torch_threads']} torch threads, "
            f"device {m['device']}, torch {m['torch']}")


def summary(xs: list[float]) -> dict:
    """Median and spread (quartiles, min, max) of repeated measurements."""
    xs = sorted(xs)
    if len(xs) >= 2:
        q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    else:
        q1 = q3 = xs[0]
    return {"median": statistics.median(xs), "q1": q1, "q3": q3, "min": xs[0], "max": xs[-1], "n": len(xs)}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ---------------------------------------------------------------- memory
def reset_peak(device: str) -> None:
    """Start a new peak-memory window: CUDA allocator peak, or the process's RSS high-water mark."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        return
    try:  # Linux: writing 5 to clear_refs resets VmHWM (peak RSS) of this process
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def current_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.memory_allocated() / 2 ** 20
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else float("nan")


def peak_mb(device: str) -> dict:
    """Peak since `reset_peak`: CUDA max_memory_allocated, or peak RSS (VmHWM; ru_maxrss if unavailable)."""
    if device.startswith("cuda"):
        return {"peak_mb": torch.cuda.max_memory_allocated() / 2 ** 20, "memory": "cuda max_memory_allocated"}
    kb = _status_kb("VmHWM")
    if kb is not None:
        return {"peak_mb": kb / 1024, "memory": "process peak RSS (VmHWM, reset per measurement)"}
    return {"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "memory": "process peak RSS since start (ru_maxrss)"}


# ---------------------------------------------------------------- timing
def time_runs(fn, device: str, warmup: int, repeats: int, min_time: float = 0.0, max_time: float = float("inf"),
              max_repeats: int = 50) -> list[float]:
    """Seconds of `fn()` over repeated runs after `warmup` untimed ones: at least `repeats` runs and
    `min_time` seconds in all (up to `max_repeats`), but stop after 3 runs once `max_time` is spent."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    while True:
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
        spent = sum(times)
        if len(times) >= max_repeats or (len(times) >= 3 and spent > max_time):
            break
        if len(times) >= repeats and spent >= min_time:
            break
    return times


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def write_json(path: Path, obj) -> None:
    """Write `obj` as JSON through a temporary file named by the process id, then rename: a reader never
    sees half a file, and two processes writing one results file cannot mix their bytes."""
    from ldlm.checkpoint import write_text_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(obj, indent=1) + "\n")


def write_report(dest: Path, stem: str, res: dict, markdown: str) -> None:
    """`dest/<stem>.json` (the numbers) and `dest/<stem>.md` (their table), and say where."""
    write_json(dest / f"{stem}.json", res)
    (dest / f"{stem}.md").write_text(markdown, encoding="utf-8")
    log(f"written: {dest / (stem + '.json')}")


# ---------------------------------------------------------------- training runs
# keys that may differ between a run and its resume without changing what is trained
IGNORED_KEYS = {("train", "threads"), ("train", "device"), ("data", "cache_dir"), ("train", "keep_last"),
                ("train", "schedule_steps")}  # 0 = train.steps: runs made before the key existed are the same run
IGNORED_SECTIONS = {"sample"}  # sampling settings do not change what a run trains


def _flat(d: dict, prefix=()) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def config_diff(a: dict, b: dict) -> list[str]:
    """Config keys (section.key) whose values differ, except IGNORED_KEYS and IGNORED_SECTIONS. A key one side lacks takes its
    default (a run saved before the key existed is read with the default, so it is the same run)."""
    from ldlm.config import Config

    defaults = _flat(Config().to_dict())
    fa, fb = {**defaults, **_flat(a)}, {**defaults, **_flat(b)}
    return [".".join(k) for k in sorted(set(fa) | set(fb))
            if k[:2] not in IGNORED_KEYS and k[0] not in IGNORED_SECTIONS and fa.get(k) != fb.get(k)]


def train_run(cfg, run: Path, name: str, missing: str | None = None) -> Path:
    """Train `cfg` into `run`: skipped when a checkpoint at its last step is there, resumed when an
    earlier one is, refused (exit with a message) when the folder holds a run of another config.
    With `missing`, a run that is not finished is not trained: exit with that message instead."""
    from ldlm import checkpoint as ck
    from ldlm.trainer import Trainer

    latest = ck.latest_name(run) if run.exists() else None
    if latest:
        saved = json.loads((run / "config.json").read_text())
        diff = config_diff(saved, cfg.to_dict())
        if diff:
            sys.exit(f"{run} was made with another config ({', '.join(diff[:6])} differ); delete it or pass --runs "
                     f"to another folder")
        step = int(ck.load_state_json(run / latest)["step"])
        if step >= cfg.train.steps:
            return run
        log(f"[{name}] resuming at step {step}")
    if missing:
        sys.exit(missing)
    log(f"[{name}] training {cfg.train.steps} steps")
    Trainer(cfg, str(run), resume=bool(latest), quiet=True).train()
    return run


# the validation figures a results file keeps for every pass (the curves behind its last line)
CURVE_KEYS = ("step", "loss", "diff_ratio", "recon_acc", "dec_mse", "latent_cos", "latent_erank", "den_ratio_a50",
              "den_ratio_a30")


def valid_curve(valid: list[dict]) -> list[dict]:
    """The run's validation passes, each cut to CURVE_KEYS (those it has)."""
    return [{k: r[k] for k in CURVE_KEYS if r.get(k) is not None} for r in valid]


def train_stats(run: Path) -> dict:
    """The run's last validation line, training wall time, median tokens/s and last training losses."""
    import statistics

    from ldlm.plots import read_metrics

    train, valid = read_metrics(run)
    out = {"valid": valid[-1] if valid else {}, "valid_curve": valid_curve(valid)}
    if train:
        # 'elapsed' restarts at 0 when a run is resumed: add up the segments
        wall, prev = 0.0, 0.0
        for r in train:
            e = r.get("elapsed")
            if e is None:
                continue
            if e < prev:
                wall += prev
            prev = e
        out["train_wall_s"] = wall + prev
        toks = [r["tok_s"] for r in train if "tok_s" in r]
        out["train_tok_s_median"] = statistics.median(toks) if toks else None
        out["train_last"] = {k: train[-1].get(k) for k in ("loss", "diff", "dec_ce", "dec_acc", "latent_cos")}
    return out


def kept_rows(path: Path, settings: dict, key: str) -> dict:
    """Rows of an earlier results file made with the same `settings`, by their `key` field ({} if none,
    if the settings differ or if the file cannot be read): a re-run reuses them instead of redoing them."""
    if not path.exists():
        return {}
    try:
        old = json.loads(path.read_text())
        return {r[key]: r for r in old["rows"]} if old.get("settings") == settings else {}
    except (ValueError, KeyError):
        return {}


def last_valid(run: Path) -> dict:
    """The run's last validation line of metrics.jsonl ({} if none)."""
    from ldlm.plots import read_metrics

    _, valid = read_metrics(run)
    return valid[-1] if valid else {}

