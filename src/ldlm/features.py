"""LDLM's training data: the frozen LM's features of every passage, computed once and cached.

The cache entry of a split (`<cache>/features/<key>/`, parts of fp16 rows, see cache.py) is keyed by
everything the features depend on: the split's token ids and mask (the corpus content as the LM
reads it), the frozen LM itself (its config and a sample of every weight tensor, not its name or
path), the layer read (`model.lm_layer`) and the precision it ran in. A changed corpus, another LM or another
layer is a new entry; the same corpus from another directory or another run is a hit.
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
from .checkpoint import save_tensors, write_text_atomic
from .frozen_lm import FrozenLM
from .precision import autocast, native_bf16

FORMAT = 2  # 2: an entry is a folder of parts, each a set of rows (1: one file, the whole split)


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


def feature_key(lm_hash: str, layer: int, ids, mask, content: str | None = None, compute: str = "fp32",
                pad_zero: bool = False) -> str:
    """The cache key of a split's features. `content` stands in for the ids of memory-mapped splits; `compute`
    is the precision the LM ran in ('bf16' or 'fp32': the features differ by more than their fp16 storage);
    `pad_zero`: padding positions hold zeros, not the LM's states there (`compute_features`)."""
    parts = {"format": FORMAT, "lm": lm_hash, "layer": layer, "dtype": "float16", "compute": compute,
             "content": content or (_tensor_hash(ids), _tensor_hash(mask)), "shape": list(ids.shape)}
    if pad_zero:  # only then, so that the entries written before this choice existed keep their keys
        parts["pad"] = "zero"
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


@torch.no_grad()
def compute_features(lm: FrozenLM, ids: torch.Tensor, mask: torch.Tensor, batch_size: int = 128,
                     device: str = "cpu", desc: str = "frozen LM features", pad_zero: bool = False) -> torch.Tensor:
    """Raw (unnormalised) features for a whole split, fp16 on the CPU; with a progress bar.

    `pad_zero` (for a model that never reads padding positions): rows are run in order of length, each batch
    cut to its longest row, and padding positions hold zeros -- 0.84x the time on the demo's passages, whose
    real tokens fill 86 % of the rows (bench/results/feature-pass-s25/). Real positions get the same states
    either way (the LM's attention ignores padding keys; fp32 rounding aside)."""
    from tqdm import tqdm

    n, L = ids.shape
    out = (torch.zeros if pad_zero else torch.empty)(n, L, lm.hidden, dtype=torch.float16)
    # the positions each row is run over: up to its last real token under pad_zero, else all; shortest first
    ends = torch.where(mask.bool(), torch.arange(1, L + 1), 0).amax(1) if pad_zero else torch.full((n,), L)
    order = torch.argsort(ends, stable=True)
    use_bf16 = native_bf16(device)  # a CPU without AMX runs bf16 slower than fp32, up to ~50x (precision.py)
    for i in tqdm(range(0, n, batch_size), desc=desc, unit="batch", leave=False,
                  disable=os.environ.get("LDLM_QUIET") == "1"):
        rows = order[i: i + batch_size]
        width = max(1, int(ends[rows].max()))
        x, m = ids[rows, :width].to(device), mask[rows, :width].to(device)
        with autocast(device, use_bf16):
            h = lm_states(lm, x, m, pad_zero)
        out[rows, :width] = h.to("cpu", torch.float16)
    return out


def lm_states(lm: FrozenLM, ids: torch.Tensor, mask: torch.Tensor, pad_zero: bool = False) -> torch.Tensor:
    """The frozen LM's raw states of one batch; under `pad_zero` its padding positions hold zeros."""
    h = lm.raw_features(ids, mask)
    return h * mask.unsqueeze(-1).to(h.dtype) if pad_zero else h


class FeatureStore:
    """The features of some rows of a split, packed: `data[slot[row]]` for the rows held (`slot` -1 elsewhere).
    Memory is the rows held, not the split (the buffer grows by a quarter when rows are added one batch at a
    time, so adding stays amortised O(1) per row)."""

    def __init__(self, n_rows: int, seq_len: int, hidden: int, capacity: int = 0):
        self.slot = torch.full((n_rows,), -1, dtype=torch.int64)
        self.data = torch.empty(capacity, seq_len, hidden, dtype=torch.float16)
        self.count = 0

    @property
    def held(self) -> torch.Tensor:
        """[rows] bool: which rows the store holds."""
        return self.slot >= 0

    def rows(self) -> torch.Tensor:
        """The rows held, in increasing order."""
        return self.held.nonzero().squeeze(1)

    def add(self, rows: torch.Tensor, feats: torch.Tensor) -> None:
        """Hold `feats` [n, L, D] as the features of `rows` [n] (rows not held yet)."""
        n = int(rows.numel())
        if self.count + n > self.data.shape[0]:
            cap = max(self.count + n, self.data.shape[0] + self.data.shape[0] // 4)
            grown = torch.empty(cap, *self.data.shape[1:], dtype=self.data.dtype)
            grown[: self.count] = self.data[: self.count]
            self.data = grown
        self.data[self.count: self.count + n] = feats.to("cpu", torch.float16)
        self.slot[rows] = torch.arange(self.count, self.count + n)
        self.count += n

    def get(self, rows: torch.Tensor) -> torch.Tensor:
        """[n, L, D] fp16 features of `rows` (every one held)."""
        s = self.slot[rows]
        if (s < 0).any():
            raise KeyError(f"features of rows {rows[s < 0][:5].tolist()} are not held")
        return self.data[s]


def _parts(entry: Path) -> list[Path]:
    return sorted(entry.glob("part-*.safetensors")) if entry.is_dir() else []


def _part_header(part: Path) -> tuple[torch.Tensor, list[int]]:
    """(the row numbers a part of a cache entry holds, the shape of its features), without reading the features."""
    from safetensors import safe_open

    with safe_open(str(part), "pt") as f:
        return f.get_tensor("rows"), list(f.get_slice("features").get_shape())


def load_part_rows(part: Path) -> torch.Tensor:
    """The row numbers a part of a cache entry holds."""
    return _part_header(part)[0]


def _index(entry: Path, shape, hidden: int) -> tuple[list[tuple[Path, torch.Tensor]], list[Path]]:
    """The entry's usable parts with the rows each holds, and the parts that are not (corrupted, or of another
    shape). Reads the parts' headers and row numbers only."""
    from safetensors import SafetensorError

    good, bad = [], []
    for part in _parts(entry):
        try:
            rows, n = _part_header(part)
            ok = (rows.dim() == 1 and n == [rows.numel(), shape[1], hidden]
                  and (rows.numel() == 0 or (int(rows.min()) >= 0 and int(rows.max()) < shape[0])))
        except (SafetensorError, KeyError, OSError, RuntimeError, ValueError):
            ok = False
        if ok:
            good.append((part, rows))
        else:
            bad.append(part)
    return good, bad


def _holds(good: list[tuple[Path, torch.Tensor]], n_rows: int, want: torch.Tensor) -> bool:
    held = torch.zeros(n_rows, dtype=torch.bool)
    for _, rows in good:
        held[rows] = True
    return bool(held[want].all())


def _load(good: list[tuple[Path, torch.Tensor]], shape, hidden: int) -> tuple[FeatureStore, list[Path]]:
    """The features of the parts `_index` found usable, and the parts whose features could not be read after all."""
    from safetensors import SafetensorError, safe_open

    store, bad = FeatureStore(shape[0], shape[1], hidden, sum(int(r.numel()) for _, r in good)), []
    for part, rows in good:
        try:
            with safe_open(str(part), "pt") as f:
                feats = f.get_tensor("features")
        except (SafetensorError, OSError, RuntimeError):
            bad.append(part)
            continue
        new = ~store.held[rows]  # parts written under the lock never overlap; a copied-in entry might
        store.add(rows[new], feats[new])
    return store, bad


def cached_features(lm: FrozenLM, ids, mask, root: Path, key: str, device: str = "cpu",
                    describe: dict | None = None, rows: torch.Tensor | None = None,
                    pad_zero: bool = False) -> FeatureStore:
    """The features of rows `rows` (all if None) of a split, from the cache entry `root/features/<key>/`.

    An entry is a folder of parts (`part-NNNNN.safetensors`: the row numbers and their fp16 features), written
    once each: the rows an entry lacks are computed and written as a new part (under a temporary name, then
    renamed), so a run that reads only part of a split computes and keeps only that part, and a later run that
    needs more rows adds them without rewriting what is there. A part that cannot be read is rebuilt. The
    features are read once: before the build lock only the parts' row numbers are, to see whether it is needed."""
    entry = Path(root) / "features" / key
    want = torch.arange(ids.shape[0]) if rows is None else torch.unique(torch.as_tensor(rows))
    good, bad = _index(entry, ids.shape, lm.hidden)
    if not bad and _holds(good, ids.shape[0], want):
        store, unreadable = _load(good, ids.shape, lm.hidden)
        if not unreadable:
            return store
    quiet = os.environ.get("LDLM_QUIET") == "1"
    with building(entry, quiet=quiet):
        good, bad = _index(entry, ids.shape, lm.hidden)  # another process may have added rows while we waited
        store, unreadable = _load(good, ids.shape, lm.hidden)
        for part in bad + unreadable:
            part.unlink(missing_ok=True)
        todo = want[~store.held[want]]
        if todo.numel() == 0:
            return store
        feats = compute_features(lm, ids[todo], mask[todo], device=device, pad_zero=pad_zero)
        store.add(todo, feats)
        parts = _parts(entry)
        part = entry / f"part-{int(parts[-1].stem.split('-')[1]) + 1 if parts else 0:05d}.safetensors"
        tmp = entry / f".{part.name}.tmp{os.getpid()}"
        meta = {"lm": lm.name, "layer": lm.layer, "rows": int(ids.shape[0]), "rows_done": int(store.count),
                "seq_len": int(ids.shape[1]), "hidden": int(lm.hidden), "created": time.time(), **(describe or {})}
        try:
            entry.mkdir(parents=True, exist_ok=True)
            save_tensors({"rows": todo, "features": feats}, tmp)
            os.replace(tmp, part)
            write_text_atomic(entry / "meta.json", json.dumps(meta, indent=1))
        except OSError as e:  # a full cache disk costs speed, not the run: keep the features in memory
            tmp.unlink(missing_ok=True)
            if not quiet:
                print(f"warning: cannot cache features in {entry} ({e.strerror}); continuing without the cache",
                      file=sys.stderr)
    return store


NORM_ROWS = 4096  # the normalisation statistics are fitted on the first training rows a run draws


class CorpusFeatures:
    """Raw frozen-LM features of a corpus's splits: cached on disk (`data.cache_features`), or
    computed batch by batch when they are too large to keep (paper-scale corpora).

    `rows` ({'train': idx, 'valid': idx}, None = all) names the rows a run will read: only those are
    computed (and cached). A row read that was not named is computed then and kept in memory. Its optional
    'train_order' (the order the run draws training rows in) names the normalisation sample: its first NORM_ROWS
    rows, else the split's first ones."""

    def __init__(self, lm: FrozenLM, corpus, data_cfg, device, rows: dict[str, torch.Tensor] | None = None,
                 pad_zero: bool = False):
        self.lm = lm
        self.pad_zero = pad_zero  # padding positions hold zeros (the model never reads them): `compute_features`
        self.stores: dict[str, FeatureStore] = {}
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
            key = feature_key(lm_hash, lm.layer, split.ids, split.mask, content,
                              "bf16" if native_bf16(device) else "fp32", pad_zero)
            self.stores[name] = cached_features(
                lm, split.ids, split.mask, root, key, str(device), {"split": name, "corpus": data_cfg.corpus}, want,
                pad_zero)

    def raw(self, split: str, idx: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, L, D] float32 raw features of rows `idx` (whose ids/mask, on the device, are given)."""
        if split not in self.stores:
            return lm_states(self.lm, ids, mask, self.pad_zero)
        store = self.stores[split]
        missing = ~store.held[idx]
        if missing.any():  # rows the run did not announce: computed now, through fp16 like the cached ones
            pos = missing.nonzero().squeeze(1)
            with torch.no_grad():
                h = lm_states(self.lm, ids[pos.to(ids.device)], mask[pos.to(ids.device)], self.pad_zero)
            new, inv = torch.unique(idx[pos], return_inverse=True)  # a batch may name a row twice: held once
            first = torch.full((len(new),), len(pos)).scatter_reduce(0, inv, torch.arange(len(pos)), "amin")
            store.add(new, h[first.to(h.device)])
        return store.get(idx).to(ids.device).float()

    def normalisation_sample(self, corpus, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw features, mask) of up to 4096 cached (or 1024 computed) training passages the run draws first."""
        rows = self.norm_rows
        if "train" in self.stores:
            sample = self.stores["train"].get(rows)
        else:
            rows = rows[:1024]
            sample = compute_features(self.lm, corpus.train.ids[rows], corpus.train.mask[rows], device=str(device),
                                      pad_zero=self.pad_zero)
        return sample.float().to(device), corpus.train.mask[rows].to(device)
