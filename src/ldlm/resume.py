"""Resuming a run: it continues the run it finds, or refuses.

- `--resume` on a folder without a checkpoint is an error (nothing is written), unless `--config`
  is given: then a new run starts there, and the CLI says so.
- The run's saved config is the starting point. `--config`, `--data` and `key=value` overrides may
  change only the keys in `SAFE_ON_RESUME` (run length, intervals, devices, sampling); any other
  difference is an error naming the keys, because the checkpoint cannot honour it.
- The schedule horizon is fixed when a run starts (`train.schedule_steps`, 0 = `train.steps`).
  Extending `train.steps` pins it to the original length, so the LR cosine still reaches its floor
  at the original last step and then stays there (no jump), and the recipe's warmup and two-stage
  boundaries, shares of the horizon, do not move. An extended run is then exactly the run that was
  started with `train.steps=NEW train.schedule_steps=OLD`.
- The corpus must be the one the run was trained on (its fingerprint is kept in the checkpoint).
"""
from __future__ import annotations

from pathlib import Path

from . import checkpoint as ck
from .config import Config, check_keys_apply, load_config, parse_overrides, schedule_horizon, set_key, validate
from .errors import UserError

# keys (or whole sections) a resumed run may change: none alters what was trained so far or the
# schedule of what follows (train.batch_size/grad_accum only if the global batch stays, checked on load)
SAFE_ON_RESUME = ("train.steps", "train.log_every", "train.eval_every", "train.eval_batches", "train.save_every",
                  "train.keep_last", "train.threads", "train.device", "train.compile", "train.max_bad_steps",
                  "train.tracker", "train.batch_size", "train.grad_accum", "data.cache_dir", "data.num_proc", "sample")


def is_safe(key: str) -> bool:
    return key in SAFE_ON_RESUME or key.split(".")[0] in SAFE_ON_RESUME


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def differing_keys(a: Config, b: Config) -> list[tuple[str, object, object]]:
    """(key, value in a, value in b) for every key whose values differ; the horizon by its effect."""
    fa, fb = _flat(a.to_dict()), _flat(b.to_dict())
    out = [(k, fa.get(k), fb.get(k)) for k in fa if k != "train.schedule_steps" and fa.get(k) != fb.get(k)]
    if schedule_horizon(a.train) != schedule_horizon(b.train):
        out.append(("train.schedule_steps", schedule_horizon(a.train), schedule_horizon(b.train)))
    return out


def check_resume(cfg: Config, ckpt: Path) -> int:
    """Refuse to resume `ckpt` with `cfg` unless only safe keys differ from the checkpoint's config;
    pin `cfg.train.schedule_steps` to the run's horizon. Returns the checkpoint's step."""
    saved = ck.load_config_of(ckpt)
    step = int(ck.load_state_json(ckpt).get("step", 0))
    horizon = schedule_horizon(saved.train)
    if cfg.train.schedule_steps == 0 and cfg.train.steps != horizon:
        cfg.train.schedule_steps = horizon  # extending (or shortening) keeps the run's schedule
    bad = [d for d in differing_keys(saved, cfg) if not is_safe(d[0])]
    if bad:
        shown = "; ".join(f"{k} is {old!r} in the run, {new!r} now" for k, old, new in bad[:4])
        more = f" (and {len(bad) - 4} more)" if len(bad) > 4 else ""
        safe = ", ".join(k if "." in k else k + ".*" for k in SAFE_ON_RESUME)
        raise UserError(f"cannot resume '{ckpt.parent}' with another config: {shown}{more}; a run may change only "
                        f"{safe}; drop the other changes, or start a new run with another --out")
    if cfg.train.steps < step:
        raise UserError(f"train.steps={cfg.train.steps} is below step {step} that '{ckpt}' has reached; "
                        f"pass train.steps>={step}")
    return step


def check_corpus(state: dict, fingerprint: str, cfg: Config) -> None:
    """The corpus must be the one the checkpoint was trained on (checkpoints before this check pass)."""
    saved = state.get("corpus_fingerprint")
    if saved and saved != fingerprint:
        raise UserError(f"the corpus data.corpus='{cfg.data.corpus}' is not the one this run was trained on "
                        f"(fingerprint {fingerprint}, the checkpoint's {saved}); restore that corpus, or start a "
                        f"new run with another --out")


def train_config(out: str, config: str | None, overrides: list[str], resume: bool) -> tuple[Config, str | None]:
    """The config `ldlm train` runs with, and a note for the user (or None).

    Without --resume: --config and overrides (the trainer refuses a folder that holds checkpoints).
    With --resume: the run's saved config with the overrides, or --config with the overrides (the
    trainer then checks it against the checkpoint); on a folder without a checkpoint --config starts
    a new run, and without --config it is an error."""
    if not resume:
        return load_config(config, overrides), None
    if not ck.has_checkpoint(out):
        if config is None:
            what = "does not exist" if not Path(out).exists() else "holds no checkpoint (no ckpt-* folder)"
            raise UserError(f"--resume: run folder '{out}' {what}; check --out, or add --config to start a new run "
                            f"there")
        return load_config(config, overrides), f"no checkpoint in '{out}': starting a new run from {config}"
    if config is not None:
        return load_config(config, overrides), None
    cfg = ck.load_config_of(ck.resolve_checkpoint(out))
    keys = []
    for k, v in parse_overrides(overrides):
        set_key(cfg, k, v)
        keys.append(k)
    validate(cfg)
    check_keys_apply(cfg, keys)
    return cfg, None
