"""The cache folder, shared by every run on the machine (and `ldlm cache list|clear`).

Where: `data.cache_dir` if set, else `$XDG_CACHE_HOME/ldlm`, else `~/.cache/ldlm`, so runs started
from any directory reuse it. What:

    features/<key>/                        frozen-LM features of one corpus split: parts of rows + meta.json
                                           (features.py; `<key>.safetensors` + `.json`: the format before it)
    tokens-<key>/                          tokenised paper-scale corpora (hubdata.py)
    hf/                                    the Hugging Face `datasets` cache of those corpora

Every entry is written under a temporary name and renamed, so a reader never sees half an entry,
and its builder holds `<entry>.lock` (flock), so two processes that need the same entry at once
build it once: the second waits, then reads it. Everything here can be rebuilt; clearing is safe.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import sys
import time
from pathlib import Path


def cache_root(cache_dir: str = "") -> Path:
    """`cache_dir`, else $XDG_CACHE_HOME/ldlm, else ~/.cache/ldlm."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "ldlm"


def _lock_path(entry: Path) -> Path:
    return entry.with_name(entry.name + ".lock")


@contextlib.contextmanager
def building(entry: Path, quiet: bool = False):
    """Hold the build lock of `entry` (waiting for another builder, if there is one)."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(_lock_path(entry), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            if not quiet:
                print(f"waiting for another process building {entry.name} in {entry.parent}", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _in_use(entry: Path) -> bool:
    lock = _lock_path(entry)
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _size(p: Path) -> int:
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def entries(root: Path) -> list[dict]:
    """Every cache entry under `root`: kind, path, bytes, modified time and a short description."""
    out = []
    feats = root / "features"
    found = sorted([*feats.glob("*.safetensors"), *(d for d in feats.iterdir() if d.is_dir())]) if feats.is_dir() else []
    for f in found:
        try:
            meta = json.loads((f / "meta.json" if f.is_dir() else f.with_suffix(".json")).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        m = {k: meta.get(k, "?") for k in ("lm", "layer", "split", "corpus", "rows", "seq_len", "hidden")}
        what = (f"{m['lm']} layer {m['layer']}, {m['split']} split of {m['corpus']}: "
                f"{m['rows']} x {m['seq_len']} x {m['hidden']}")
        out.append({"kind": "features", "path": f, "bytes": _size(f), "modified": f.stat().st_mtime, "what": what})
    for d in sorted(root.glob("tokens-*")) if root.is_dir() else []:
        try:
            meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
            what = f"{meta.get('format')} {meta.get('source')}, {meta.get('tokenizer')}, rows {meta.get('rows')}"
        except (OSError, ValueError):
            what = "(incomplete)"
        out.append({"kind": "tokens", "path": d, "bytes": _size(d), "modified": d.stat().st_mtime, "what": what})
    if (root / "hf").is_dir():
        out.append({"kind": "hf", "path": root / "hf", "bytes": _size(root / "hf"),
                    "modified": (root / "hf").stat().st_mtime, "what": "Hugging Face datasets cache"})
    return out


def clear(root: Path) -> tuple[int, int, list[Path]]:
    """Remove every entry not being built right now. Returns (entries removed, bytes freed, kept)."""
    removed, freed, kept = 0, 0, []
    for e in entries(root):
        p = e["path"]
        if _in_use(p):
            kept.append(p)
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
            p.with_suffix(".json").unlink(missing_ok=True)
        _lock_path(p).unlink(missing_ok=True)
        removed, freed = removed + 1, freed + e["bytes"]
    return removed, freed, kept


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return str(n)


def run_cache(args) -> None:
    """`ldlm cache list|clear [--dir D]`."""
    root = cache_root(args.dir or "")
    if args.action == "list":
        es = entries(root)
        for e in es:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e["modified"]))
            print(f"{e['kind']:8s} {_human(e['bytes']):>10s}  {when}  {e['path'].name}  {e['what']}")
        print(f"{len(es)} entries, {_human(sum(e['bytes'] for e in es))} in {root}")
    else:
        n, freed, kept = clear(root)
        print(f"removed {n} entries ({_human(freed)}) from {root}"
              + (f"; kept {len(kept)} being built now: {', '.join(p.name for p in kept)}" if kept else ""))
