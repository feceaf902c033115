"""A fingerprint of a training set: which images, of which identity and camera, a run was trained on.

A checkpoint stores it (``train_fingerprint``); resuming on other training data - identities added (the classifier
no longer fits) or swapped with the count kept (its rows would now train on other people) - is refused before
anything loads.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Dict, Mapping, Optional, Sequence

__all__ = ["train_fingerprint", "fingerprint_change"]


def train_fingerprint(items: Sequence[tuple]) -> Dict[str, Any]:
    """``{'sha256', 'images', 'identities', 'cameras'}`` of torchreid training items ``(path, pid, camid, ...)``.

    The hash runs over the sorted ``(path relative to the items' common folder, pid, camid, file size)`` lines, so
    moving the whole data folder (another ``data.root``) keeps it, while a renamed, added, removed, relabelled or
    replaced image changes it (a replaced file of exactly the same size is not seen: contents are not read). A file
    that cannot be found counts as size -1.
    """
    paths = [str(item[0]) for item in items]
    base = os.path.commonpath(paths) if paths else ""
    if len(paths) == 1:
        base = os.path.dirname(base)
    lines = sorted(f"{os.path.relpath(p, base) if base else p}\t{int(item[1])}\t{int(item[2])}\t{_size(p)}"
                   for p, item in zip(paths, items))
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return {"sha256": digest, "images": len(items), "identities": len({int(i[1]) for i in items}),
            "cameras": len({int(i[2]) for i in items})}


def fingerprint_change(stored: Mapping[str, Any], current: Mapping[str, Any]) -> Optional[str]:
    """None when both describe the same training set, else the difference in words."""
    if stored.get("sha256") == current.get("sha256"):
        return None
    counts = [f"{stored.get(k)} {k} then, {current.get(k)} now" for k in ("images", "identities", "cameras")
              if stored.get(k) != current.get(k)]
    return "; ".join(counts) if counts else ("the same counts, but other images or labels (e.g. identities "
                                              "swapped or renamed)")


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return -1
