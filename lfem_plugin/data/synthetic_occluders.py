"""Synthetic occluders of a known kind, area and position, drawn deterministically: what the occlusion-robustness
curves put over the queries (:mod:`lfem_plugin.tools.robustness`).

* kinds: ``scene`` (a strip of a donor image's border, where pedestrian crops show background), ``person`` (a piece of
  another identity's body: the donor's central columns), ``noise`` (per-pixel uniform noise), ``erase`` (a solid fill
  in the donor set's mean colour, as random erasing's constant mode);
* positions: ``bottom`` and ``top`` (full-width bands), ``side`` (a full-height band at the left or right, drawn);
* area: the fraction of the query's pixels the band covers, exact to one row / column.

Occluded crops from detectors and benchmarks (Occluded-Duke, Occluded-REID) are mostly lower-body and side
occlusions by other people, cars and scene objects; the kinds and positions follow that.

Reference: Zhuo et al., "Occluded Person Re-identification" (ICME 2018, Occluded-REID); Miao et al., "Pose-Guided
Feature Alignment for Occluded Person Re-identification" (ICCV 2019, Occluded-Duke).
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

__all__ = ["KINDS", "POSITIONS", "band_box", "draw_occluder"]

KINDS = ("scene", "person", "noise", "erase")
POSITIONS = ("bottom", "side", "top")
Box = Tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive), pixels of the image


def band_box(height: int, width: int, area: float, position: str, rng: np.random.Generator) -> Box:
    """The band covering ``area`` (in [0, 1)) of a ``height x width`` image at ``position``: ``bottom`` / ``top``
    take ``round(area * height)`` full rows, ``side`` ``round(area * width)`` full columns at the left or the right
    (one draw of ``rng``). ValueError for an unknown position or an area outside [0, 1)."""
    if position not in POSITIONS:
        raise ValueError(f"position {position!r} is not one of {', '.join(POSITIONS)}")
    if not 0.0 <= area < 1.0:
        raise ValueError(f"occluded area {area} must be in [0, 1)")
    if position == "side":
        cols = int(round(area * width))
        left = bool(rng.integers(0, 2))
        return (0, 0, cols, height) if left else (width - cols, 0, width, height)
    rows = int(round(area * height))
    return (0, height - rows, width, height) if position == "bottom" else (0, 0, width, rows)


def _resized(piece: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.fromarray(piece).resize((width, height), Image.BILINEAR))


def draw_occluder(image: np.ndarray, donor: np.ndarray, box: Box, kind: str, rng: np.random.Generator,
                  fill: Sequence[int] = (124, 116, 104)) -> np.ndarray:
    """``image`` (H, W, 3 uint8) with ``box`` covered by an occluder of ``kind``; ``donor`` (any size, 3 uint8) gives
    the ``scene`` and ``person`` pixels (resized into the box), ``fill`` the ``erase`` colour. Returns a new array;
    pixels outside the box are unchanged. ValueError for an unknown kind."""
    if kind not in KINDS:
        raise ValueError(f"occluder kind {kind!r} is not one of {', '.join(KINDS)}")
    x0, y0, x1, y1 = box
    out = image.copy()
    h, w = y1 - y0, x1 - x0
    if h <= 0 or w <= 0:
        return out
    dh, dw = donor.shape[:2]
    if kind == "noise":
        patch = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    elif kind == "erase":
        patch = np.broadcast_to(np.asarray(fill, dtype=np.uint8), (h, w, 3))
    else:
        top = int(y0 * dh / image.shape[0])
        rows = slice(top, max(top + 1, int(y1 * dh / image.shape[0])))  # the rows the box spans, in the donor
        if kind == "scene":  # the donor's border strip (left or right): background in a pedestrian crop
            strip = max(1, int(round(dw * min(w / image.shape[1], 0.25))))
            cols = slice(0, strip) if rng.integers(0, 2) else slice(dw - strip, dw)
        else:  # person: the donor's central columns, its body
            width_ = max(1, int(round(dw * max(w / image.shape[1], 0.25))))
            cols = slice((dw - width_) // 2, (dw - width_) // 2 + width_)
        patch = _resized(np.ascontiguousarray(donor[rows, cols]), h, w)
    out[y0:y1, x0:x1] = patch
    return out
