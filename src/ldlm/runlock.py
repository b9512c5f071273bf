"""One writer per run folder: an exclusive lock file, `<run>/writer.lock`, naming its holder.

The lock is an `flock` on the file, so the kernel drops it when the holder dies, however it dies;
the file's JSON (pid, host, start time) is only there to name the holder in the error. A lock file
left by a killed trainer is therefore stale by construction: the next trainer takes it over and
says so. Where the filesystem has no `flock` the pid is checked instead (same host only; a lock
from another host is then treated as held).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from .errors import UserError

NAME = "writer.lock"


def _holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _describe(h: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h["time"])) if "time" in h else "?"
    return f"pid {h.get('pid', '?')} on host {h.get('host', '?')}, since {since}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """`with RunLock(run_dir):` or `acquire()`/`release()`. `took_over` names a stale holder, if any."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / NAME
        self.fd: int | None = None
        self.took_over: dict | None = None
        self.created = False  # the folder did not exist: an empty one is removed again on release

    def acquire(self) -> "RunLock":
        self.created = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    self._refuse(_holder(self.path))
                if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    return self._acquire_by_pid()
                raise
            # the previous holder may have unlinked the file between our open and our flock
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        old = _holder(self.path)
        if old.get("pid") and (old.get("pid"), old.get("host")) != (os.getpid(), socket.gethostname()):
            self.took_over = old  # its holder died without releasing it (SIGKILL, power cut, ...)
        self.fd = fd
        self._write(fd)
        return self

    def _acquire_by_pid(self) -> "RunLock":
        """Fallback without flock: exclusive create; a lock of a dead pid on this host is taken over."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                break
            except FileExistsError:
                h = _holder(self.path)
                if h.get("host") == socket.gethostname() and isinstance(h.get("pid"), int) \
                        and not _pid_alive(h["pid"]):
                    self.took_over = h
                    self.path.unlink(missing_ok=True)
                    continue
                self._refuse(h)
        self.fd = fd
        self._write(fd)
        return self

    def _write(self, fd: int) -> None:
        data = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}).encode()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        except OSError:
            pass  # e.g. a full disk: the flock still holds, only the holder's name is missing

    def _refuse(self, holder: dict) -> None:
        raise UserError(f"run folder '{self.path.parent}' is being written by another trainer ({_describe(holder)}; "
                        f"lock file {self.path}); wait for it to finish or stop it, or choose another --out")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still locked: a waiting opener then re-checks the inode
        except OSError:
            pass
        os.close(self.fd)  # drops the flock
        self.fd = None
        if self.created:
            try:
                self.path.parent.rmdir()  # only if empty: a trainer that failed before writing leaves nothing
            except OSError:
                pass

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        self.release()
