"""Is a checkpoint file whole? Zip CRC-32s and the end record, checked before ``torch.load`` trusts the bytes.

``torch.save`` writes a zip archive (``<name>/data.pkl`` plus one stored member ``<name>/data/N`` per tensor
storage), each member with the CRC-32 of its bytes. ``torch.load`` does not check them, so damaged bytes inside a
tensor (bad disk, bad copy) load as silent garbage or NaN. :func:`verify_checkpoint_file` reads every member and
compares its CRC; an interrupted copy (no end record) is told apart from a pickle. A file that is not a zip at all
(torch's legacy format, a plain pickle) is left to ``torch.load`` and its own messages.
"""
from __future__ import annotations

import logging
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

__all__ = ["named_tensors", "DamagedCheckpointError", "verify_checkpoint_file", "bad_members", "name_damaged_tensors"]

_logger = logging.getLogger(__name__)
_ZIP_MAGIC = b"PK\x03\x04"
_CHUNK = 1 << 22  # 4 MiB reads


class DamagedCheckpointError(ValueError):
    """A checkpoint file whose bytes are not the ones written: truncated, or a member with a wrong CRC-32."""


def bad_members(archive: zipfile.ZipFile, path: Path) -> List[Tuple[zipfile.ZipInfo, int]]:
    """``(member, actual CRC-32)`` of every member whose bytes do not match the CRC-32 the zip directory holds.

    Stored members (all of ``torch.save``'s) are read straight from the file at their offset; others through
    :mod:`zipfile`.
    """
    bad = []
    with open(path, "rb") as raw:
        for info in archive.infolist():
            crc = _stored_crc(raw, info) if info.compress_type == zipfile.ZIP_STORED else _member_crc(archive, info)
            if crc != info.CRC:
                bad.append((info, crc))
    return bad


def _stored_crc(raw, info: zipfile.ZipInfo) -> int:
    """CRC-32 of a stored member's bytes; the local header (30 bytes + name + extra field) precedes them."""
    raw.seek(info.header_offset)
    header = raw.read(30)
    if len(header) < 30 or header[:4] != _ZIP_MAGIC:
        raise zipfile.BadZipFile(f"no local header for {info.filename} at byte {info.header_offset}")
    name_len, extra_len = int.from_bytes(header[26:28], "little"), int.from_bytes(header[28:30], "little")
    raw.seek(info.header_offset + 30 + name_len + extra_len)
    crc, left = 0, info.file_size
    while left > 0:
        chunk = raw.read(min(_CHUNK, left))
        if not chunk:
            raise EOFError(f"{info.filename} ends {left} bytes early")
        crc, left = zlib.crc32(chunk, crc), left - len(chunk)
    return crc


def _member_crc(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> int:
    """A compressed member (not written by ``torch.save``): :mod:`zipfile` checks the CRC-32 as it reads."""
    try:
        with archive.open(info) as handle:
            while handle.read(_CHUNK):
                pass
    except zipfile.BadZipFile:
        return info.CRC ^ 0xFFFFFFFF  # wrong; zipfile does not say what it found
    return info.CRC


def _incomplete(path: Path, size: int) -> DamagedCheckpointError:
    return DamagedCheckpointError(
        f"checkpoint {path} is incomplete ({size} bytes; the zip's end record is missing): it was cut short, e.g. "
        f"by an interrupted copy or save. Copy it again from its source, or use an earlier checkpoint")


def verify_checkpoint_file(path: str | os.PathLike) -> None:
    """Check that a ``torch.save`` zip checkpoint is whole: end record present, every member's CRC-32 right.

    Cost: one read of the file (CRC-32 via zlib), which the page cache usually serves again to ``torch.load``.

    Raises:
        DamagedCheckpointError: the file starts as a zip but its end record is missing (cut short), naming its size;
            or members hold bytes other than written, naming them (and, when the tensors can be read, which
            tensors they hold).
    """
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head != _ZIP_MAGIC:
        return  # torch's legacy format or a plain pickle: torch.load's own messages apply
    size = path.stat().st_size
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise _incomplete(path, size) from None
    with archive:
        expected = max((i.header_offset + i.compress_size for i in archive.infolist()), default=0)
        try:
            bad = bad_members(archive, path)
        except (zipfile.BadZipFile, EOFError, OSError) as err:
            raise DamagedCheckpointError(f"checkpoint {path} is damaged: its zip directory does not match its "
                                         f"contents ({size} bytes, members end at >= {expected}: {err}); copy it "
                                         f"again from its source, or use an earlier checkpoint") from None
    if bad:
        raise DamagedCheckpointError(_damaged_message(path, bad))


def _damaged_message(path: Path, bad: List[Tuple[zipfile.ZipInfo, int]]) -> str:
    members = ", ".join(f"{info.filename} ({info.file_size} bytes, CRC-32 {crc:08x}, written {info.CRC:08x})"
                        for info, crc in bad[:5])
    tensors = name_damaged_tensors(path, bad)
    where = f"; it holds {', '.join(tensors[:5])}" if tensors else ""
    return (f"checkpoint {path} is damaged: {len(bad)} zip member(s) hold other bytes than were written: {members}"
            f"{where}. Bad disk or bad copy: copy it again from its source, or use an earlier checkpoint")


def name_damaged_tensors(path: Path, bad: List[Tuple[zipfile.ZipInfo, int]]) -> List[str]:
    """Names of the tensors stored in the ``bad`` members (matched by size and actual CRC-32 of their storage);
    empty when the file cannot be read even so."""
    import torch
    wanted = {(info.file_size, crc) for info, crc in bad if "/data/" in info.filename}
    if not wanted:
        return []
    try:  # the numpy scalars torchreid stores are allow-listed by load_checkpoint beforehand
        state: Dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - naming the tensor is a bonus; the members are named anyway
        return []
    names = []
    for name, tensor in named_tensors(state):
        storage = tensor.untyped_storage()
        if (storage.nbytes(), zlib.crc32(bytes(storage))) in wanted:
            names.append(name)
    return names


def named_tensors(obj: Any, prefix: str = "") -> Iterator[Tuple[str, Any]]:
    """``(dotted name, tensor)`` of every tensor in a nested dict/list state (a tensor is what has storage: no
    torch import here)."""
    if hasattr(obj, "untyped_storage"):
        yield prefix, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from named_tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from named_tensors(value, f"{prefix}.{i}")
