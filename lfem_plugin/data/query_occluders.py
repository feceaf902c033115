"""Occluders of a known kind, area and position over query images: the points of an occlusion-robustness curve.

Each occluder is a band across the image, the shape real occluders of pedestrians take (a car or a bag over the legs,
a pillar beside the person, an awning over the head): ``bottom`` and ``top`` bands span the full width, ``side``
bands the full height on the left or the right (one draw). A band covers ``area`` of the image to the nearest pixel
row (column): ``h = floor(area * height + 0.5)``.

Kinds: ``scene`` (a background strip of a donor image: its outer quarter columns, the same rows, resized into the
band; pedestrian crops hold the person in the middle), ``person`` (the donor's pixels in the same band: another
person's legs, shoulder or head, :func:`~lfem_plugin.data.datasets.paste_occluder` ``'image'``), ``noise`` (uniform
noise, ``paste_occluder`` ``'noise'``) and ``erase`` (the band set to one colour, e.g. the model's mean pixel: zero
after normalisation, as random erasing fills). Every draw of query ``i`` comes from
``numpy.random.default_rng([seed, kind index, i])``, so the same donor, side and noise stream serve every area and
position of a curve, and the same seed gives identical pixels and boxes.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
from PIL import Image

from .datasets import paste_occluder

__all__ = ["QUERY_OCCLUDER_KINDS", "POSITIONS", "band_box", "occlude_query", "check_sweep"]

QUERY_OCCLUDER_KINDS = ("scene", "person", "noise", "erase")
POSITIONS = ("bottom", "side", "top")

Box = Tuple[int, int, int, int]  # top, left, h, w


def check_sweep(kinds: Sequence[str], areas: Sequence[float], positions: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the bad value and the choices: an unknown kind or position, an area outside
    ``[0, 1)``, or an empty list."""
    for name, values, choices in (("kind", kinds, QUERY_OCCLUDER_KINDS), ("position", positions, POSITIONS)):
        bad = [v for v in values if v not in choices]
        if bad or not values:
            raise ValueError(f"occluder {name}(s) {list(values)}: choose among {list(choices)}")
    bad = [a for a in areas if not 0 <= a < 1]
    if bad or not areas:
        raise ValueError(f"occluded area(s) {list(areas)}: give fractions of the query in [0, 1), e.g. "
                         f"--areas 0 0.1 0.2 0.3 0.4 0.5 0.6")


def band_box(height: int, width: int, area: float, position: str, left: bool = True) -> Box:
    """``(top, left, h, w)`` of the band covering ``area`` (in ``[0, 1)``) of a ``height x width`` image at
    ``position`` (``side``: on the left if ``left``, else on the right). Raises ``ValueError`` for a bad area or
    position."""
    check_sweep(QUERY_OCCLUDER_KINDS, [area], [position])
    if position == "side":
        w = int(np.floor(area * width + 0.5))
        return 0, 0 if left else width - w, height, w
    h = int(np.floor(area * height + 0.5))
    return (height - h if position == "bottom" else 0), 0, h, width


def _scene(image: np.ndarray, donor: np.ndarray, box: Box, rng: np.random.Generator) -> np.ndarray:
    """The donor's outer quarter columns (left or right: one draw), the box's rows, resized into the box."""
    top, left, h, w = box
    strip = max(1, donor.shape[1] // 4)
    cols = slice(0, strip) if rng.random() < 0.5 else slice(donor.shape[1] - strip, donor.shape[1])
    out = image.copy()
    if h > 0 and w > 0:
        patch = Image.fromarray(np.ascontiguousarray(donor[top:top + h, cols]))
        out[top:top + h, left:left + w] = np.asarray(patch.resize((w, h), Image.BILINEAR))
    return out


def occlude_query(image: np.ndarray, donor: np.ndarray, kind: str, area: float, position: str,
                  rng: np.random.Generator, fill: Tuple[int, int, int] = (0, 0, 0)) -> Tuple[np.ndarray, Box]:
    """``image`` (``(H, W, 3)`` uint8) with a ``kind`` band over ``area`` of it at ``position``, and the band's box
    ``(top, left, h, w)``; ``donor``: another identity's image of the same size (``scene``/``person``), ``fill``: the
    ``erase`` colour (RGB, 0-255). The first draw of ``rng`` picks the side of a ``side`` band. Raises
    ``ValueError`` for an unknown kind or position, an area outside ``[0, 1)`` or a donor of another size."""
    check_sweep([kind], [area], [position])
    if donor.shape != image.shape:
        raise ValueError(f"donor image {donor.shape} and query {image.shape} differ in size; resize the donor first")
    box = band_box(*image.shape[:2], area, position, left=bool(rng.random() < 0.5))
    top, left, h, w = box
    if kind == "erase":
        out = image.copy()
        out[top:top + h, left:left + w] = np.asarray(fill, dtype=np.uint8)
        return out, box
    if kind == "scene":
        return _scene(image, donor, box, rng), box
    return paste_occluder(image, donor, rng, box, ("image",) if kind == "person" else ("noise",))[0], box
