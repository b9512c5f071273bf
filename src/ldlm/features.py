"""LDLM's training data: the frozen LM's features of every passage, computed once and cached.

The cache entry of a split (`<cache>/features/<key>.safetensors`, fp16, see cache.py) is keyed by
everything the features depend on: the split's token ids and mask (the corpus content as the LM
reads it), the frozen LM itself (its config and a sample of every weight tensor, not its name or
path) and the layer read (`model.lm_layer`). A changed corpus, another LM or another layer is a
new entry; the same corpus from another directory or another run is a hit.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import torch

from .cache import building, cache_root
from .checkpoint import save_tensors
from .frozen_lm import FrozenLM
from .precision import autocast, native_bf16

FORMAT = 1


def lm_fingerprint(lm: FrozenLM) -> str:
    """A content hash of the frozen LM: its config and ~64 values strided over each weight tensor."""
    h = hashlib.sha256()
    conf = lm.lm.config.to_dict()
    for k in ("_name_or_path", "transformers_version", "torch_dtype", "dtype"):
        conf.pop(k, None)
    h.update(json.dumps(conf, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, t in sorted(lm.lm.state_dict().items()):
            flat = t.detach().reshape(-1)
            h.update(f"{name}{tuple(t.shape)}".encode())
            h.update(flat[:: max(1, flat.numel() // 64)].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _tensor_hash(t) -> str:
    return hashlib.sha256(torch.as_tensor(t).contiguous().cpu().numpy().tobytes()).hexdigest()


def feature_key(lm_hash: str, layer: int, ids, mask, content: str | None = None) -> str:
    """The cache key of a split's features. `content` stands in for the ids of memory-mapped splits."""
    parts = {"format": FORMAT, "lm": lm_hash, "layer": layer, "dtype": "float16",
             "content": content or (_tensor_hash(ids), _tensor_hash(mask)), "shape": list(ids.shape)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


@torch.no_grad()
def compute_features(lm: FrozenLM, ids: torch.Tensor, mask: torch.Tensor, batch_size: int = 128,
                     device: str = "cpu", desc: str = "frozen LM features") -> torch.Tensor:
    """Raw (unnormalised) features for a whole split, fp16 on the CPU; with a progress bar."""
    from tqdm import tqdm

    out = torch.empty(ids.shape[0], ids.shape[1], lm.hidden, dtype=torch.float16)
    use_bf16 = native_bf16(device)  # a CPU without bf16 hardware runs it ~50x slower than fp32 (precision.py)
    for i in tqdm(range(0, ids.shape[0], batch_size), desc=desc, unit="batch", leave=False,
                  disable=os.environ.get("LDLM_QUIET") == "1"):
        x, m = ids[i: i + batch_size].to(device), mask[i: i + batch_size].to(device)
        with autocast(device, use_bf16):
            h = lm.raw_features(x, m)
        out[i: i + batch_size] = h.to("cpu", torch.float16)
    return out


def _read(path: Path, shape) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(features, done): `done` [rows] marks the rows the entry holds (an entry without it holds all)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        t = load_file(str(path))
        f = t["features"]
        done = t["done"].bool() if "done" in t else torch.ones(f.shape[0], dtype=torch.bool)
    except (SafetensorError, KeyError, OSError, RuntimeError):
        return None  # corrupted: rebuilt below (it is only a cache)
    return (f, done) if tuple(f.shape[:2]) == tuple(shape) and done.shape == (f.shape[0],) else None


def cached_features(lm: FrozenLM, ids, mask, root: Path, key: str, device: str = "cpu",
                    describe: dict | None = None, rows: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, done) from `root/features/<key>.safetensors`. The rows in `rows` (all if None) that the entry
    lacks are computed, merged in and the entry written again atomically; `done` marks the rows it holds (the
    others are zeros). A run that reads only part of a split so computes only that part."""
    path = Path(root) / "features" / f"{key}.safetensors"
    want = torch.ones(ids.shape[0], dtype=torch.bool)
    if rows is not None:
        want = torch.zeros(ids.shape[0], dtype=torch.bool)
        want[rows] = True
    got = _read(path, ids.shape)
    if got is not None and got[1][want].all():
        return got
    with building(path, quiet=os.environ.get("LDLM_QUIET") == "1"):
        got = _read(path, ids.shape)  # another process may have built it while we waited
        if got is not None and got[1][want].all():
            return got
        f, done = got if got is not None else (
            torch.zeros(ids.shape[0], ids.shape[1], lm.hidden, dtype=torch.float16),
            torch.zeros(ids.shape[0], dtype=torch.bool))
        todo = (want & ~done).nonzero().squeeze(1)
        f[todo] = compute_features(lm, ids[todo], mask[todo], device=device)
        done = done | want
        meta = {"lm": lm.name, "layer": lm.layer, "rows": int(f.shape[0]), "rows_done": int(done.sum()),
                "seq_len": int(f.shape[1]), "hidden": int(f.shape[2]), "created": time.time(), **(describe or {})}
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            save_tensors({"features": f, **({} if done.all() else {"done": done.to(torch.uint8)})}, tmp)
            path.with_suffix(".json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as e:  # a full cache disk costs speed, not the run: keep the features in memory
            tmp.unlink(missing_ok=True)
            if os.environ.get("LDLM_QUIET") != "1":
                print(f"warning: cannot cache features in {path.parent} ({e.strerror}); continuing without the cache",
                      file=sys.stderr)
    return f, done


NORM_ROWS = 4096  # the normalisation statistics are fitted on the first training rows a run draws


class CorpusFeatures:
    """Raw frozen-LM features of a corpus's splits: cached on disk (`data.cache_features`), or
    computed batch by batch when they are too large to keep (paper-scale corpora).

    `rows` ({'train': idx, 'valid': idx}, None = all) names the rows a run will read: only those are
    computed (and cached). A row read that was not named is computed then and kept in memory. Its optional
    'train_order' (the order the run draws training rows in) names the normalisation sample: its first NORM_ROWS
    rows, else the split's first ones."""

    def __init__(self, lm: FrozenLM, corpus, data_cfg, device, rows: dict[str, torch.Tensor] | None = None):
        self.lm = lm
        self.feats: dict[str, torch.Tensor] = {}
        self.done: dict[str, torch.Tensor] = {}
        # the normalisation is fitted on the first NORM_ROWS rows the run draws: a run of 500 steps reads them anyway
        # (no extra features), and they do not depend on the run's length or on what the cache already holds
        order = None if rows is None else rows.get("train_order")
        n_norm = min(NORM_ROWS, len(corpus.train.ids))
        self.norm_rows = torch.arange(n_norm) if order is None else torch.sort(order[:n_norm]).values
        if not data_cfg.cache_features:
            return
        root, lm_hash = cache_root(data_cfg.cache_dir), lm_fingerprint(lm)
        for name, split in (("train", corpus.train), ("valid", corpus.valid)):
            want = None if rows is None or rows.get(name) is None else rows[name]
            if want is not None and name == "train":
                want = torch.cat([want, self.norm_rows])
            content = None if torch.is_tensor(split.ids) else f"{corpus.fingerprint}-{name}"
            key = feature_key(lm_hash, lm.layer, split.ids, split.mask, content)
            self.feats[name], self.done[name] = cached_features(
                lm, split.ids, split.mask, root, key, str(device), {"split": name, "corpus": data_cfg.corpus}, want)

    def raw(self, split: str, idx: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, L, D] float32 raw features of rows `idx` (whose ids/mask, on the device, are given)."""
        if split not in self.feats:
            return self.lm.raw_features(ids, mask)
        missing = ~self.done[split][idx]
        if missing.any():  # rows the run did not announce: computed now, through fp16 like the cached ones
            with torch.no_grad():
                h = self.lm.raw_features(ids[missing.to(ids.device)], mask[missing.to(ids.device)])
            self.feats[split][idx[missing]] = h.to("cpu", torch.float16)
            self.done[split][idx[missing]] = True
        return self.feats[split][idx].to(ids.device).float()

    def normalisation_sample(self, corpus, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw features, mask) of up to 4096 cached (or 1024 computed) training passages the run draws first."""
        rows = self.norm_rows
        if "train" in self.feats:
            sample = self.feats["train"][rows]
        else:
            rows = rows[:1024]
            sample = compute_features(self.lm, corpus.train.ids[rows], corpus.train.mask[rows], device=str(device))
        return sample.float().to(device), corpus.train.mask[rows].to(device)
