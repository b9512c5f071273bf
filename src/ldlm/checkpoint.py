"""Checkpoints: safetensors for every tensor, JSON for everything else, written atomically.

A run folder holds `ckpt-<step>/` folders and a `latest` file naming the newest one:

    runs/tiny/latest                       -> "ckpt-000500"
    runs/tiny/ckpt-000500/config.json      the full config of the run
    runs/tiny/ckpt-000500/model.safetensors  trained weights + buffers (frozen LM weights excluded)
    runs/tiny/ckpt-000500/ema.safetensors    EMA of the trained weights and buffers (used for sampling)
    runs/tiny/ckpt-000500/train.safetensors  optimizer moments, sampler state, RNG states
    runs/tiny/ckpt-000500/state.json         step, data position, optimizer hyper-parameters

Each checkpoint is written to a temporary folder, fsynced and renamed, then `latest` is replaced
atomically, so a crash (or a full disk) at any moment leaves the previous checkpoint intact. Nothing
is unpickled. `runs/tiny/writer.lock` exists while a trainer writes the folder (runlock.py).
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import Config, config_from_dict
from .errors import UserError

FORMAT = 1


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors file, fsynced. A failed write raises OSError (safetensors reports a full disk as a
    SafetensorError carrying the OS error's text; it is turned back into the OSError it was)."""
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))
    except SafetensorError as e:
        m = re.search(r"os error (\d+)", str(e))
        code = int(m.group(1)) if m else errno.EIO
        raise OSError(code, os.strerror(code), str(path)) from None
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def flatten_optimizer(opt_state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {"param_groups": opt_state["param_groups"], "state": {}}
    for idx, st in opt_state["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{idx}.{k}"] = v
            else:
                scalars["state"].setdefault(str(idx), {})[k] = v
    return tensors, scalars


def unflatten_optimizer(tensors: dict[str, torch.Tensor], scalars: dict) -> dict:
    state: dict = {}
    for name, v in tensors.items():
        if name.startswith("optim."):
            _, idx, k = name.split(".", 2)
            state.setdefault(int(idx), {})[k] = v
    for idx, st in scalars.get("state", {}).items():
        state.setdefault(int(idx), {}).update(st)
    return {"state": state, "param_groups": scalars["param_groups"]}


def _write_folder(tmp: Path, cfg: Config, step: int, model: dict, ema: dict | None, train_tensors: dict | None,
                  state: dict | None) -> None:
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    (tmp / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", encoding="utf-8")
    save_tensors(model, tmp / "model.safetensors")
    if ema is not None:
        save_tensors(ema, tmp / "ema.safetensors")
    if train_tensors:
        save_tensors(train_tensors, tmp / "train.safetensors")
    (tmp / "state.json").write_text(json.dumps({"format": FORMAT, "step": step, **(state or {})}, indent=1),
                                    encoding="utf-8")
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(tmp)


def _nbytes(*dicts: dict | None) -> int:
    return sum(v.numel() * v.element_size() for d in dicts if d for v in d.values())


# a write refused by the system (full disk, quota, read-only or forbidden folder, file-size limit)
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)


def write_failed(run_dir: Path, what: str, err: OSError, need: int | None = None) -> UserError:
    """The one-line error of a failed write into a run folder (full disk, quota, permissions)."""
    try:
        free = f"{shutil.disk_usage(run_dir).free / 1e6:,.1f} MB free"
    except OSError:
        free = "free space unknown"
    last = latest_name(run_dir)
    space = f"it needs about {need / 1e6:,.1f} MB, {free}" if need else free
    kept = f"the previous checkpoint {last} and 'latest' are intact" if last else "no checkpoint was written"
    return UserError(f"cannot write {what} in '{run_dir}' ({err.strerror or err}; {space}); {kept}; free space or "
                     f"fix the folder's permissions, then continue with `ldlm train --out {run_dir} --resume`")


def save_checkpoint(run_dir: Path, step: int, cfg: Config, model: dict, ema: dict | None,
                    train_tensors: dict | None = None, state: dict | None = None, keep_last: int = 2) -> Path:
    """Write ckpt-<step>/ atomically, point `latest` at it, and prune to the newest `keep_last`.

    A write that fails (full disk, permissions) removes its temporary folder and raises a UserError;
    the previous checkpoint and `latest` are untouched, so `--resume` continues from them exactly."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    name = f"ckpt-{step:06d}"
    final = run_dir / name
    tmp = run_dir / f".{name}.tmp{os.getpid()}"
    try:
        _write_folder(tmp, cfg, step, model, ema, train_tensors, state)
        if final.exists():  # re-saving the same step (e.g. after resume): replace it whole
            old = run_dir / f".{name}.old{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(run_dir)
        write_text_atomic(run_dir / "latest", name + "\n")
        write_text_atomic(run_dir / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_failed(run_dir, f"checkpoint {name}", e, _nbytes(model, ema, train_tensors) + 64_000) from None
    if keep_last > 0:
        ckpts = sorted(p for p in run_dir.glob("ckpt-*") if p.is_dir())
        for old in ckpts[:-keep_last]:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    return final


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether `run_dir` holds a finished checkpoint folder."""
    p = Path(run_dir)
    return p.is_dir() and any(q.is_dir() for q in p.glob("ckpt-*"))


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder (follows `latest`) or a ckpt-<step> folder -> the checkpoint folder."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"checkpoint '{path}' not found; pass a run folder (e.g. runs/tiny) or a ckpt-<step> folder")
    if (p / "latest").is_file():
        name = (p / "latest").read_text(encoding="utf-8").strip()
        if not (p / name).is_dir():
            raise UserError(f"'{p}/latest' names '{name}', which is missing; pass one of the ckpt-* folders in {p}")
        return p / name
    if (p / "model.safetensors").is_file():
        return p
    ckpts = sorted(q for q in p.glob("ckpt-*") if q.is_dir()) if p.is_dir() else []
    if ckpts:
        return ckpts[-1]
    raise UserError(f"'{path}' holds no checkpoint (no 'latest' file and no model.safetensors); train first")


def load_config_of(ckpt: Path) -> Config:
    f = ckpt / "config.json"
    try:
        d = json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"checkpoint '{ckpt}' has no config.json; it is incomplete, use another checkpoint") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"checkpoint '{ckpt}/config.json' is corrupted (not JSON); use another checkpoint") from None
    return config_from_dict(d)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"checkpoint file '{path}' is missing; the checkpoint is incomplete, use another one")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise UserError(f"checkpoint file '{path}' is corrupted or truncated ({str(e).splitlines()[0][:100]}); "
                        f"use another checkpoint") from None


def load_state_json(ckpt: Path) -> dict:
    try:
        return json.loads((ckpt / "state.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"checkpoint '{ckpt}/state.json' is missing or corrupted; use another checkpoint") from None


def check_fits(tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str) -> None:
    """Raise a UserError unless `tensors` has exactly the names and shapes of `expected`."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    bad = [k for k in expected if k in tensors and tuple(tensors[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or bad:
        detail = (f"shape of '{bad[0]}' is {tuple(tensors[bad[0]].shape)} there, {tuple(expected[bad[0]].shape)} here"
                  if bad else f"missing '{missing[0]}'" if missing else f"unexpected '{unexpected[0]}'")
        raise UserError(f"{what} does not fit this model ({detail}): it was made with another config; "
                        f"load it with its own config.json or retrain")


def load_into(module: torch.nn.Module, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
              what: str) -> None:
    """Load `tensors` into `module` after checking names and shapes against `expected`; state an older
    checkpoint lacks takes the module's `legacy_state()` value, if it names one."""
    legacy = module.legacy_state() if hasattr(module, "legacy_state") else {}
    tensors = {**{k: v for k, v in legacy.items() if k in expected and k not in tensors}, **tensors}
    check_fits(tensors, expected, what)
    module.load_state_dict(tensors, strict=False)


def latest_name(run_dir: Path) -> str | None:
    """The checkpoint `latest` names, or None."""
    try:
        name = (Path(run_dir) / "latest").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return name if (Path(run_dir) / name).is_dir() else None


def clean_stale(run_dir: Path) -> None:
    """Remove temporary folders/files a killed writer left behind (never a finished checkpoint)."""
    for p in Path(run_dir).glob(".*.tmp*"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    for p in Path(run_dir).glob(".ckpt-*.old*"):
        shutil.rmtree(p, ignore_errors=True)
