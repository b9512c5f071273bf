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
    use_bf16 = device == "cpu" or torch.cuda.is_available()
    for i in tqdm(range(0, ids.shape[0], batch_size), desc=desc, unit="batch", leave=False,
                  disable=os.environ.get("LDLM_QUIET") == "1"):
        x, m = ids[i: i + batch_size].to(device), mask[i: i + batch_size].to(device)
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=use_bf16):
            h = lm.raw_features(x, m)
        out[i: i + batch_size] = h.to("cpu", torch.float16)
    return out


def _read(path: Path, shape) -> torch.Tensor | None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        f = load_file(str(path))["features"]
    except (SafetensorError, KeyError, OSError, RuntimeError):
        return None  # corrupted: rebuilt below (it is only a cache)
    return f if tuple(f.shape[:2]) == tuple(shape) else None


def cached_features(lm: FrozenLM, ids, mask, root: Path, key: str, device: str = "cpu",
                    describe: dict | None = None) -> torch.Tensor:
    """Features from `root/features/<key>.safetensors`, computed and written atomically if absent."""
    path = Path(root) / "features" / f"{key}.safetensors"
    f = _read(path, ids.shape)
    if f is not None:
        return f
    with building(path, quiet=os.environ.get("LDLM_QUIET") == "1"):
        f = _read(path, ids.shape)  # another process may have built it while we waited
        if f is not None:
            return f
        f = compute_features(lm, ids, mask, device=device)
        meta = {"lm": lm.name, "layer": lm.layer, "rows": int(f.shape[0]), "seq_len": int(f.shape[1]),
                "hidden": int(f.shape[2]), "created": time.time(), **(describe or {})}
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            save_tensors({"features": f}, tmp)
            path.with_suffix(".json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as e:  # a full cache disk costs speed, not the run: keep the features in memory
            tmp.unlink(missing_ok=True)
            if os.environ.get("LDLM_QUIET") != "1":
                print(f"warning: cannot cache features in {path.parent} ({e.strerror}); continuing without the cache",
                      file=sys.stderr)
    return f


class CorpusFeatures:
    """Raw frozen-LM features of a corpus's splits: cached on disk (`data.cache_features`), or
    computed batch by batch when they are too large to keep (paper-scale corpora)."""

    def __init__(self, lm: FrozenLM, corpus, data_cfg, device):
        self.lm = lm
        self.feats: dict[str, torch.Tensor] = {}
        if not data_cfg.cache_features:
            return
        root, lm_hash = cache_root(data_cfg.cache_dir), lm_fingerprint(lm)
        for name, split in (("train", corpus.train), ("valid", corpus.valid)):
            content = None if torch.is_tensor(split.ids) else f"{corpus.fingerprint}-{name}"
            key = feature_key(lm_hash, lm.layer, split.ids, split.mask, content)
            self.feats[name] = cached_features(lm, split.ids, split.mask, root, key, str(device),
                                               {"split": name, "corpus": data_cfg.corpus})

    def raw(self, split: str, idx: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, L, D] float32 raw features of rows `idx` (whose ids/mask, on the device, are given)."""
        if split in self.feats:
            return self.feats[split][idx].to(ids.device).float()
        return self.lm.raw_features(ids, mask)

    def normalisation_sample(self, corpus, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw features, mask) of up to 4096 cached (or 1024 computed) training passages."""
        if "train" in self.feats:
            sample = self.feats["train"][:4096]
        else:
            sample = compute_features(self.lm, corpus.train.ids[:1024], corpus.train.mask[:1024], device=str(device))
        n = sample.shape[0]
        return sample.float().to(device), corpus.train.mask[:n].to(device)
