"""Occluder boxes as data: the ``occlusion.json`` file a dataset with known occluders ships beside its queries.

Format (the one of ``cuhk03_pair1_128x64/occlusion.json``)::

    {"queries": {"<query file name>": {"box_xyxy": [x0, y0, x1, y1], "image_size_wh": [w, h], ...}}}

in pixels of the stored image, ``x1``/``y1`` exclusive; further keys per query (``kind``, ``occluded_fraction``) and
at the top (``about``) are kept but not needed. ``orl_faces_occluded`` writes this file when it draws its occluded
queries, so ``lfem-reid analyze-gates`` reads boxes the same way for it and for any dataset that ships them.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Sequence, Tuple

from ..utils.atomic import write_text

__all__ = ["OCCLUSION_FILE", "OccluderBox", "read_occlusion_file", "write_occlusion_file", "find_occlusion_file"]

OCCLUSION_FILE = "occlusion.json"


@dataclass(frozen=True)
class OccluderBox:
    """One query's occluder: ``box_xyxy`` (x0, y0, x1, y1; exclusive ends) in the pixels of an image of
    ``image_size_wh`` (width, height), and its ``kind`` where the file says (e.g. ``person``, ``scene``, ``noise``;
    empty otherwise)."""

    box_xyxy: Tuple[int, int, int, int]
    image_size_wh: Tuple[int, int]
    kind: str = ""

    def top_left_height_width(self) -> Tuple[int, int, int, int]:
        """The box as ``(top, left, h, w)``."""
        x0, y0, x1, y1 = self.box_xyxy
        return y0, x0, y1 - y0, x1 - x0

    def image_height_width(self) -> Tuple[int, int]:
        return self.image_size_wh[1], self.image_size_wh[0]


def _box(path: Path, name: str, entry) -> OccluderBox:
    try:
        box, size = [int(v) for v in entry["box_xyxy"]], [int(v) for v in entry["image_size_wh"]]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{path}: query {name!r} needs 'box_xyxy': [x0, y0, x1, y1] and 'image_size_wh': [w, h] "
                         f"(integers), found {entry!r}") from None
    x0, y0, x1, y1 = box if len(box) == 4 else (0, 0, -1, -1)
    if len(size) != 2 or not (0 <= x0 <= x1 <= size[0] and 0 <= y0 <= y1 <= size[1]):
        raise ValueError(f"{path}: query {name!r} has box_xyxy {box} outside its image_size_wh {size} (expected "
                         f"0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h)")
    kind = entry.get("kind", "")
    return OccluderBox(tuple(box), tuple(size), kind if isinstance(kind, str) else "")


def read_occlusion_file(path: str | os.PathLike) -> Dict[str, OccluderBox]:
    """``{query file name: OccluderBox}`` of an occlusion file; errors name the file and the entry at fault."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"occluder boxes file {path} not found; pass --boxes FILE ({OCCLUSION_FILE} "
                                f"format: {{\"queries\": {{name: {{\"box_xyxy\": [...], \"image_size_wh\": "
                                f"[...]}}}}}})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"occluder boxes file {path} is not valid JSON ({err})") from None
    queries = data.get("queries") if isinstance(data, dict) else None
    if not isinstance(queries, dict):
        raise ValueError(f"occluder boxes file {path} has no 'queries' mapping of file name -> box")
    return {name: _box(path, name, entry) for name, entry in queries.items()}


def write_occlusion_file(path: str | os.PathLike, boxes: Dict[str, Dict], about: str = "") -> Path:
    """Write ``{"about": about, "queries": boxes}`` (``boxes``: name -> ``box_xyxy``, ``image_size_wh`` and any
    extra keys)."""
    path = Path(path)
    payload = {"about": about, "queries": boxes} if about else {"queries": boxes}
    write_text(path, json.dumps(payload, indent=1) + "\n", "occlusion file")
    return path


def find_occlusion_file(query_paths: Sequence[str]) -> Path:
    """The occlusion file of a query set: ``occlusion.json`` in the folder of its images or the folder above (where
    a Market-layout folder keeps it, beside ``query_occluded/``)."""
    folder = Path(query_paths[0]).parent
    for candidate in (folder / OCCLUSION_FILE, folder.parent / OCCLUSION_FILE):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no {OCCLUSION_FILE} in {folder} or {folder.parent}: this query set ships no occluder "
                            f"boxes; pass --boxes FILE")
