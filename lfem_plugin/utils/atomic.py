"""Writing files that are never seen half-written: a temporary file in the same folder, fsync, rename.

Every file the product writes (checkpoints, features, search tables and pictures, exports, plots, JSON reports,
val-split and occlusion records) goes through :func:`atomic_path` or one of its shortcuts. A failure leaves the
previous file (if any) untouched and no temporary file behind; a full disk raises :class:`DiskFullError` naming the
path and the space needed.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Optional

__all__ = ["DiskFullError", "disk_full", "raise_if_disk_full", "atomic_path", "atomic_open", "write_text", "save_npy",
           "file_mode"]

_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """Not enough space to write a file; the previous file at that path (if any) is intact."""


def file_mode() -> int:
    """Mode of a new regular file under the process umask (0644 under umask 022), as ``open`` would give."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB ({size} bytes)"


def disk_full(path: Path, needed: Optional[int], what: str = "file", advice: str = "") -> DiskFullError:
    """The error for a full disk: the path, the space needed (or at least what was written) and what is free."""
    free = shutil.disk_usage(path.parent).free if path.parent.exists() else 0
    need = f"it needs about {_mib(needed)}" if needed else "it needs more"
    return DiskFullError(errno.ENOSPC, f"no space to write {what} {path}: {need} and {_mib(free)} are free on "
                                       f"{path.parent}; {advice or 'free some space or write elsewhere'} (nothing "
                                       f"was left at {path})")


def raise_if_disk_full(err: OSError, path: str | os.PathLike, what: str = "file") -> None:
    """Raise :func:`disk_full`'s error for ``path`` when ``err`` is ENOSPC/EDQUOT (else return: re-raise ``err``)."""
    if err.errno in _FULL and not isinstance(err, DiskFullError):
        raise disk_full(Path(path), None, what) from None


@contextmanager
def atomic_path(path: str | os.PathLike, needed: Optional[int] = None, what: str = "file", advice: str = "",
                keep_suffix: bool = False) -> Iterator[Path]:
    """A temporary path ``.<name>.<random>.tmp`` in ``path``'s folder to write; renamed to ``path`` when the block
    ends without error.

    Args:
        path: the file to produce; its folder is created.
        needed: bytes the file will take, if known: checked against the free space first, and named on failure.
        what: what the file is, for messages ("features", "checkpoint").
        advice: what to do on a full disk (default: free some space or write elsewhere).
        keep_suffix: end the temporary name with ``path``'s suffix too (``.tmp.png``), for writers that pick the
            format from the name (Pillow, matplotlib, ``np.savez``).

    Raises:
        DiskFullError: the disk cannot hold ``needed`` bytes, or the write failed with ENOSPC/EDQUOT; no partial
            file is left at ``path`` nor a temporary one beside it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if needed is not None and shutil.disk_usage(path.parent).free < needed:
        raise disk_full(path, needed, what, advice)
    suffix = ".tmp" + (path.suffix if keep_suffix else "")
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, file_mode())  # mkstemp creates 0600; an output is a file like any other
        os.replace(tmp, path)
    except OSError as err:
        if err.errno in _FULL and not isinstance(err, DiskFullError):
            written = tmp.stat().st_size if tmp.exists() else 0
            raise disk_full(path, needed or written or None, what, advice) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", needed: Optional[int] = None, what: str = "file",
                advice: str = "", **kwargs: Any) -> Iterator[BinaryIO]:
    """:func:`atomic_path` opened with ``open(tmp, mode, **kwargs)`` (``"w"``, ``"wb"``; e.g. ``newline=""``)."""
    with atomic_path(path, needed, what, advice) as tmp:
        with open(tmp, mode, **kwargs) as handle:
            yield handle


def write_text(path: str | os.PathLike, text: str, what: str = "file") -> Path:
    """``Path.write_text`` (UTF-8), atomically; returns ``path``."""
    data = text.encode("utf-8")
    with atomic_open(path, "wb", len(data), what) as handle:
        handle.write(data)
    return Path(path)


def save_npy(path: str | os.PathLike, array: Any, what: str = "features") -> Path:
    """``np.save(path, array)`` atomically (``path`` is used as given: no ``.npy`` appended)."""
    import numpy as np
    array = np.asanyarray(array)
    with atomic_open(path, "wb", array.nbytes + 128, what) as handle:
        np.save(handle, array)
    return Path(path)
