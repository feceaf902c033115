"""A validation split of a Market-layout folder's *training* identities, written as a Market-layout folder.

Settings (model size, stride, epochs) are chosen on it, never on the test queries: ``num_ids`` training identities
(drawn with ``seed`` among those seen by at least two cameras) become the validation query and gallery, the rest
stay for training. Per held-out identity, its images from its lowest camera are the queries and its images from the
other cameras the gallery: on a two-camera folder (c1 query, c2 gallery) this is the test protocol itself. Images are
hard-linked (copied across file systems) under their own names, and ``val_split.json`` records what was held out.
The folder is written to a temporary sibling and renamed when complete.

With ``occlude=(lo, hi)`` the split also gets ``query_occluded/``: every validation query with one occluder pasted
over ``lo..hi`` of its area (by default a rectangle of noise or the same rectangle of an image of another identity
left for training, the ORL proxy's occluders: :func:`~lfem_plugin.data.datasets.occluder_box`; the kind ``'piece'``
adds a piece of such an image cut elsewhere and resized into the rectangle, as real occluders are), and
``occlusion.json`` with each box, so that ``market_layout_occluded`` and ``lfem-reid analyze-gates`` read it as they
read a test set's occluded queries: occlusion settings are then chosen on training identities, never on the test
queries.

Reference: the usual ReID practice of holding out training identities for validation (e.g. torchreid's
``Market1501`` users; fast-reid's ``DATASETS.VAL``-style splits).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from PIL import Image

from .datasets import DUKE_SPLITS, OCCLUDER_KINDS, _box_entry, occluder_box, paste_occluder
from .market_layout import scan_market_split
from .occluded_benchmarks import _pick
from ..utils.atomic import raise_if_disk_full
from .occlusion import OCCLUSION_FILE, write_occlusion_file

__all__ = ["split_identities", "write_val_split", "write_occluded_queries"]

_logger = logging.getLogger(__name__)

OCCLUDED_QUERY = "query_occluded"  # market_layout_occluded's default query folder
DEFAULT_KINDS = ("noise", "image")  # the ORL proxy's occluders


def split_identities(items: List[tuple], num_ids: int, seed: int = 0) -> Dict[str, List[tuple]]:
    """``{'train', 'query', 'gallery'}`` items of a training list ``(path, pid, camid)`` with ``num_ids`` identities
    held out (raises ``ValueError`` when fewer than ``num_ids`` identities have two cameras, or none would be left)."""
    cams: Dict[int, set] = defaultdict(set)
    for _, pid, cam in items:
        cams[pid].add(cam)
    eligible = sorted(pid for pid, seen in cams.items() if len(seen) > 1)
    if not 0 < num_ids <= len(eligible) or num_ids >= len(cams):
        raise ValueError(f"cannot hold out {num_ids} identities: {len(eligible)} of the {len(cams)} training "
                         f"identities are seen by two or more cameras; choose 1..{min(len(eligible), len(cams) - 1)}")
    held = set(np.random.default_rng(seed).choice(eligible, size=num_ids, replace=False).tolist())
    out: Dict[str, List[tuple]] = {"train": [], "query": [], "gallery": []}
    for item in items:
        pid, cam = item[1], item[2]
        split = "train" if pid not in held else "query" if cam == min(cams[pid]) else "gallery"
        out[split].append(item)
    return out


def _place(src: str, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def _check_coverage(coverage: Tuple[float, float]) -> None:
    if not 0 < coverage[0] <= coverage[1] < 1:
        raise ValueError(f"occluder coverage {tuple(coverage)}: need 0 < LO <= HI < 1 (fractions of the image area)")


def _check_kinds(kinds: Sequence[str]) -> None:
    if not kinds or set(kinds) - set(OCCLUDER_KINDS) or len(set(kinds)) != len(kinds):
        raise ValueError(f"occluder kinds {list(kinds)}: choose one or more, each once, among "
                         f"{', '.join(OCCLUDER_KINDS)}")


def write_occluded_queries(queries: List[tuple], donors: List[tuple], folder: Path,
                           coverage: Tuple[float, float] = (0.2, 0.5), seed: int = 0,
                           kinds: Sequence[str] = DEFAULT_KINDS) -> Dict[str, dict]:
    """Write every query ``(path, pid, camid)`` under its own name into ``folder`` with one occluder over a random
    ``coverage`` fraction of it, drawn uniformly among ``kinds`` (:func:`~lfem_plugin.data.datasets.paste_occluder`:
    uniform noise, the same box of a donor image, or a piece of a donor cut elsewhere and resized into the box; the
    donor is drawn among ``donors`` and resized to the query's size); returns the :mod:`~lfem_plugin.data.occlusion`
    entries by file name. The draws of query ``i`` come from ``numpy.random.default_rng([seed, i])``, so the result
    depends on ``seed``, ``kinds`` and the list alone. A file of the same name already in ``folder`` is replaced.
    Raises ``ValueError`` for a coverage outside ``0 < lo <= hi < 1``, an unknown kind or an empty ``donors``
    list."""
    if not donors:
        raise ValueError("no donor images for the occluders: the split left no training identity")
    _check_coverage(coverage)
    _check_kinds(kinds)
    folder.mkdir(parents=True, exist_ok=True)
    boxes = {}
    for i, (path, _, _) in enumerate(queries):
        rng = np.random.default_rng([seed, i])
        with Image.open(path) as img:
            image = np.asarray(img.convert("RGB"))
        with Image.open(donors[int(rng.integers(len(donors)))][0]) as img:
            other = np.asarray(img.convert("RGB").resize(image.shape[1::-1], Image.BICUBIC))
        box = occluder_box(*image.shape[:2], rng, coverage)
        occluded, kind = paste_occluder(image, other, rng, box, kinds)
        name = Path(path).name
        Image.fromarray(occluded).save(folder / name, quality=95)
        boxes[name] = _box_entry(box, *image.shape[:2], kind)
    return boxes


def write_val_split(source: str | os.PathLike, out: str | os.PathLike, num_ids: int = 100, seed: int = 0,
                    overwrite: bool = False, occlude: Optional[Tuple[float, float]] = None,
                    occluder_kinds: Sequence[str] = DEFAULT_KINDS) -> Path:
    """Write ``out`` (a Market-layout folder) from ``source``'s ``bounding_box_train/``: see the module docstring.
    ``occlude``: also write ``query_occluded/`` and ``occlusion.json`` (occluders over this fraction range of each
    query's area; donors from the identities left for training), each of one of ``occluder_kinds``
    (:func:`write_occluded_queries`). Raises ``FileExistsError`` when ``out`` exists
    (unless ``overwrite``), ``FileNotFoundError`` naming ``source`` when it has no training folder and
    ``ValueError`` for a coverage outside (0, 1) or an unknown occluder kind."""
    if occlude is not None:
        _check_coverage(occlude)
        _check_kinds(occluder_kinds)
    source, out = Path(source).expanduser(), Path(out).expanduser()
    train_dir = _pick(source, [DUKE_SPLITS["train"]]) if source.is_dir() else None
    if train_dir is None:
        raise FileNotFoundError(f"{source} has no {DUKE_SPLITS['train']}/ to hold identities out of; give the "
                                f"Market-layout folder (bounding_box_train/, query/, bounding_box_test/)")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; remove it, choose another --out, or pass --overwrite")
    # raw ids: the split is written under the original names, so the loader relabels training ids itself
    splits = split_identities(scan_market_split(train_dir), num_ids, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        for split, folder in (("train", DUKE_SPLITS["train"]), ("query", "query"), ("gallery", DUKE_SPLITS["gallery"])):
            (tmp / folder).mkdir()
            for path, *_ in splits[split]:
                _place(path, tmp / folder / Path(path).name)
        held = sorted({pid for _, pid, _ in splits["query"]})
        record = {"source": str(source), "seed": seed, "held_out_ids": held,
                  "images": {split: len(items) for split, items in splits.items()}}
        if occlude is not None:
            boxes = write_occluded_queries(splits["query"], splits["train"], tmp / OCCLUDED_QUERY, occlude, seed,
                                           occluder_kinds)
            write_occlusion_file(tmp / OCCLUSION_FILE, boxes, about=f"validation queries of {source} (seed {seed}, "
                                                                    f"coverage {list(occlude)}): one occluder each")
            record["occluded_queries"] = {"coverage": list(occlude), "folder": OCCLUDED_QUERY,
                                          "kinds": list(occluder_kinds)}
        (tmp / "val_split.json").write_text(json.dumps(record, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except OSError as err:  # the folder is written whole or not at all; a full disk names it
        raise_if_disk_full(err, out, "validation split")
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _logger.info("validation split of %s: %s", source, record["images"])
    return out
