"""Optional experiment trackers (train.tracker): the metrics.jsonl records mirrored to TensorBoard or Trackio.

Neither package is a dependency: asking for one that is not installed is a one-line error at start."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from .errors import UserError

TRACKERS = {"": None, "tensorboard": "tensorboard", "trackio": "trackio"}  # train.tracker -> the package it needs


def check_tracker(name: str) -> None:
    """Refuse, before any work, a tracker whose package is not installed."""
    package = TRACKERS[name]
    if package and importlib.util.find_spec(package) is None:
        raise UserError(f"train.tracker={name} needs the '{package}' package, which is not installed; "
                        f"`pip install {package}` or set train.tracker=''")


class Tracker:
    """Scalars of each metrics record, as `train/<key>` or `valid/<key>` at the record's step."""

    def __init__(self, name: str, run_dir: Path, config: dict):
        self.name = name
        if name == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
        else:
            import trackio

            self.trackio = trackio
            trackio.init(project="ldlm", name=Path(run_dir).resolve().name, config=config)

    def log(self, record: dict) -> None:
        if "event" in record or "step" not in record:
            return
        split = record.get("split", "train")
        scalars = {f"{split}/{k}": float(v) for k, v in record.items()
                   if k not in ("step", "split") and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.name == "tensorboard":
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, record["step"])
            self.writer.flush()
        else:
            self.trackio.log(scalars, step=record["step"])

    def close(self) -> None:
        if self.name == "tensorboard":
            self.writer.close()
        else:
            self.trackio.finish()


def open_tracker(name: str, run_dir: Path, config: dict) -> Tracker | None:
    """The tracker named by train.tracker, or None; a tracker that fails to start is reported, not fatal."""
    if not name:
        return None
    try:
        return Tracker(name, run_dir, config)
    except Exception as e:  # noqa: BLE001 - a tracker is a convenience; the run and metrics.jsonl go on
        print(f"warning: train.tracker={name} could not start ({type(e).__name__}: {e}); "
              f"metrics.jsonl and the plots are still written", file=sys.stderr)
        return None
