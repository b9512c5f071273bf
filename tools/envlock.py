"""The lock files are the environment: `make setup` installs them with --no-deps, then syncs.

    requirements.lock          every package, pinned; closed under its packages' dependencies
    requirements-nodeps.txt    packages that declare dependencies ldlm never uses; each line says which
                               (`# drops: a b c -- why`), and only those may be missing

    .venv/bin/python tools/envlock.py sync    # uninstall what the lock files do not list, then check
    .venv/bin/python tools/envlock.py check   # exit 1, one line per problem, if the environment differs

With --no-deps nothing outside the lock files can be installed, so the environment and the lock files
cannot drift apart silently: a missing dependency is a `check` problem, not a package pip quietly adds.
"""
from __future__ import annotations

import importlib.metadata as md
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK_FILES = (ROOT / "requirements.lock", ROOT / "requirements-nodeps.txt")
NOT_LOCKED = {"ldlm"}  # the project itself, installed editable (-e .)
_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)\s*(?:#\s*(.*))?$")


@dataclass
class Pin:
    name: str  # as written in the lock file
    version: str
    file: str
    drops: set[str] = field(default_factory=set)  # canonical names of dependencies deliberately not installed


def read_lock(paths=LOCK_FILES) -> dict[str, Pin]:
    """{canonical name: Pin} of every lock file; a name pinned twice or a line that is no pin is an error."""
    pins: dict[str, Pin] = {}
    for path in paths:
        for n, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            m = _LINE.match(line)
            if not m:
                raise ValueError(f"{Path(path).name}:{n}: '{line}' is not NAME==VERSION [# drops: ...]")
            name, version, comment = m.group(1), m.group(2), m.group(3) or ""
            key = canonicalize_name(name)
            if key in pins:
                raise ValueError(f"{Path(path).name}:{n}: {name} is pinned twice (also in {pins[key].file})")
            drops = set()
            if comment.startswith("drops:"):
                drops = {canonicalize_name(d) for d in comment[6:].split("--")[0].split()}
            pins[key] = Pin(name, version, Path(path).name, drops)
    return pins


def _same_version(installed: str, pinned: str) -> bool:
    """A pin without a local label accepts local builds of that release (2.13.0 accepts 2.13.0+cpu)."""
    have, want = Version(installed), Version(pinned)
    return have == want if want.local else have.public == want.public


def installed() -> dict[str, md.Distribution]:
    """{canonical name: distribution} of the running interpreter's environment."""
    out = {}
    for d in md.distributions():
        name = d.metadata["Name"]
        if name:
            out.setdefault(canonicalize_name(name), d)
    return out


def requirements(dist: md.Distribution) -> list[Requirement]:
    """Unconditional requirements (no extras) whose markers hold on this interpreter."""
    out = []
    for r in dist.requires or []:
        req = Requirement(r)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            out.append(req)
    return out


def problems(pins: dict[str, Pin] | None = None, dists: dict[str, md.Distribution] | None = None) -> list[str]:
    """Every locked package installed at its pinned version, with every dependency it declares pinned (at a
    version it accepts) or dropped on purpose; one line per problem. (`unlocked` lists the reverse.)"""
    pins = read_lock() if pins is None else pins
    dists = installed() if dists is None else dists
    out = []
    for key, pin in sorted(pins.items()):
        d = dists.get(key)
        if d is None:
            out.append(f"{pin.name}=={pin.version} ({pin.file}) is not installed; run `make setup`")
            continue
        if not _same_version(d.version, pin.version):
            out.append(f"{pin.name} {d.version} is installed but {pin.file} pins {pin.version}; run `make setup`")
        deps = set()
        for req in requirements(d):
            dep = canonicalize_name(req.name)
            deps.add(dep)
            if dep in pin.drops:
                continue
            if dep not in pins:
                out.append(f"{pin.name} needs {req} but no lock file pins {req.name}; pin it in requirements.lock "
                           f"(or list it after '# drops:' in requirements-nodeps.txt)")
            elif not req.specifier.contains(Version(pins[dep].version), prereleases=True):
                out.append(f"{pin.name} needs {req} but {pins[dep].name}=={pins[dep].version} is pinned")
        for stale in sorted(pin.drops - deps):
            out.append(f"{pin.file}: {pin.name} drops {stale}, which it does not depend on")
    return out


def unlocked(pins: dict[str, Pin], dists: dict[str, md.Distribution]) -> list[str]:
    """Installed distributions that no lock file pins (the project itself aside)."""
    return sorted(d.metadata["Name"] for k, d in dists.items() if k not in pins and k not in NOT_LOCKED)


def main(argv=None) -> int:
    cmd = (argv if argv is not None else sys.argv[1:]) or ["check"]
    if cmd[0] not in ("sync", "check"):
        print(__doc__, file=sys.stderr)
        return 2
    if cmd[0] == "sync":
        extra = unlocked(read_lock(), installed())
        if extra:
            print(f"envlock: removing {len(extra)} package(s) no lock file pins: {' '.join(extra)}")
            subprocess.run([sys.executable, "-m", "pip", "uninstall", "-q", "-y", *extra], check=True)
    pins, dists = read_lock(), installed()
    bad = problems(pins, dists) + [f"{name} is installed but in no lock file; pin it, or run `make setup` to "
                                   f"remove it" for name in unlocked(pins, dists)]
    for line in bad:
        print(f"envlock: {line}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
