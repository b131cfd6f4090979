"""One training process per run directory: a lock file holding the owner's PID.

``RunLock(run_dir).acquire()`` creates ``run_dir/.lock`` (exclusively) with the process's PID, host
and start time, and removes it when the process exits (or on ``release()``). A second run on the same
directory is refused in one line while the owner lives; a lock whose owner is gone (killed with
``kill -9``, the machine rebooted) is stale and taken over. The start time guards against a recycled
PID: a new process that happens to get a dead owner's PID does not keep the lock alive.

Only rank 0 takes the lock under ``torchrun``. A lock written on another host cannot be checked from
here (a shared filesystem): it is refused with the path to delete once that run is known to be gone.
"""

from __future__ import annotations

import atexit
import os
import socket
from pathlib import Path

from shortcutlens.checkpoint import CheckpointError

LOCK_NAME = ".lock"


class RunDirInUseError(CheckpointError):
    """Another live process trains in this run directory."""


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux ``/proc``), or "" where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name in () may hold spaces


def _alive(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in ("Z", "X"):  # killed, not yet reaped: it writes nothing any more
            return False
    except OSError:
        pass
    return not start or not _start_time(pid) or _start_time(pid) == start


class RunLock:
    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.held = False

    def _owner(self) -> tuple[int, str, str] | None:
        try:
            pid, host, start = (self.path.read_text().split() + ["", "", ""])[:3]
            return int(pid), host, start
        except (OSError, ValueError):
            return None

    def acquire(self) -> RunLock:
        me = (os.getpid(), socket.gethostname(), _start_time(os.getpid()))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is None:  # being written this instant, or garbage: look again, then take it over
                    if self.path.is_file() and self.path.stat().st_size == 0:
                        import time

                        time.sleep(0.05)
                        if self._owner() is not None:
                            continue
                elif owner[:2] == me[:2]:  # this process already holds it (a second run in one interpreter)
                    self.held = True
                    return self
                elif owner[1] != me[1]:
                    raise RunDirInUseError(
                        f"run_dir {self.run_dir} is in use by process {owner[0]} on host {owner[1]} (lock file "
                        f"{self.path}); use another run_dir, or delete the lock file once that run is gone")
                elif _alive(owner[0], owner[2]):
                    raise RunDirInUseError(
                        f"run_dir {self.run_dir} is in use by training process {owner[0]} (lock file {self.path}); "
                        "wait for it to finish or use another run_dir")
                self.path.unlink(missing_ok=True)  # stale: its owner is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{me[0]} {me[1]} {me[2]}\n")
            self.held = True
            atexit.register(self.release)
            return self
        raise RunDirInUseError(f"run_dir {self.run_dir}: could not take the lock file {self.path}; another run keeps "
                               "taking it")

    def release(self) -> None:
        """Remove the lock file if this process still owns it."""
        if self.held:
            owner = self._owner()
            if owner is not None and owner[0] == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False
