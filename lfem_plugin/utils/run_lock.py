"""One training per output folder: a lock file holding the owner's pid, taken over when its owner is gone.

Two trainings writing into the same ``data.save_dir`` would overwrite each other's checkpoints and log while both
"succeed"; the second one is refused instead, with the running process named.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

__all__ = ["RunLock", "RunLockedError"]

_logger = logging.getLogger(__name__)
LOCK_NAME = "lfem-reid.lock"


class RunLockedError(FileExistsError):
    """Another live process trains into the same folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """Context manager holding ``<save_dir>/lfem-reid.lock`` for the lifetime of a training.

    A lock whose process is no longer running on this host (killed with SIGKILL, machine rebooted) is stale and is
    taken over with a warning; a lock from another host cannot be checked and is respected.

    Args:
        save_dir: the run's output folder (``data.save_dir``).
    """

    def __init__(self, save_dir: str | os.PathLike) -> None:
        self.path = Path(save_dir) / LOCK_NAME
        self.held = False

    def _owner(self) -> Optional[Dict[str, Any]]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)})
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._check_stale()
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(record)
            self.held = True
            return self
        raise RunLockedError(f"could not take the lock {self.path}; another training is starting in the same folder")

    def _check_stale(self) -> None:
        owner = self._owner()
        if owner is None:  # being written right now, or garbage: give the writer a moment, then take it over
            time.sleep(0.2)
            if self._owner() is not None:
                return
        elif owner.get("host") != socket.gethostname() or _alive(int(owner.get("pid", -1))):
            raise RunLockedError(
                f"{self.path.parent} is in use by another training (pid {owner.get('pid')} on {owner.get('host')}, "
                f"started {owner.get('started')}: {owner.get('command', '')[:200]}). Wait for it or stop it, or set "
                f"another data.save_dir; if that process is gone, delete {self.path}")
        else:
            _logger.warning("taking over the stale lock %s of pid %s (no longer running)", self.path,
                            owner.get("pid"))
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held:
            owner = self._owner()
            if owner is not None and owner.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
