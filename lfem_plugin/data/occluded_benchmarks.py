"""The other occluded and partial ReID benchmarks, registered into torchreid: Occluded-REID, Partial-REID and
Partial-iLIDS (test only; trained on Market-1501 by convention) and P-DukeMTMC-reID (train and test).

None of them has camera labels. Query images get camera 0 and gallery images camera 1 (the convention of the
public loaders): the Market/Duke protocol drops same-identity same-camera gallery items, so one shared camera id
would delete every true match. Identities are integers read from the folder an image sits in (``<pid>/*.tif``) or,
for images lying directly in the split folder, from the start of the file name (``<pid>_NN.jpg``, ``<pid>.jpg``).

Copies in circulation name folders differently (``Partial_REID``/``PartialREID``, ``partial_body_images``/
``occluded_body_images``, ``Probe``/``Gallery``); every known variant is accepted, matched without regard to case,
``-`` or ``_``, directly under the data root or one folder below it. An error names what was expected and what
was found. Image and identity counts fixed by the benchmark are checked with a warning (a partial copy still runs).

Reference: Zhuo et al., "Occluded Person Re-identification", ICME 2018 (Occluded-REID, P-DukeMTMC-reID);
Zheng et al., "Partial Person Re-identification", ICCV 2015 (Partial-REID); He et al., "Deep Spatial Feature
Reconstruction for Partial Person Re-identification", CVPR 2018 (Partial-iLIDS protocol).
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..registry import DATASETS
from .datasets import Item, SafeImageDataset, drop_dangling_links, relabel_ids
from .io import IMAGE_SUFFIXES

__all__ = ["QUERY_CAMERA", "GALLERY_CAMERA", "TEST_ONLY", "Layout", "find_dataset_dir", "split_dirs", "scan_split",
           "init_without_training", "OccludedREID", "PartialREID", "PartialILIDS", "PDukeMTMCReID"]

_logger = logging.getLogger(__name__)

QUERY_CAMERA, GALLERY_CAMERA = 0, 1
_LEADING_INT = re.compile(r"^(\d+)")


def _key(name: str) -> str:
    """A folder name compared without case, ``-`` or ``_`` (``Partial-REID`` == ``partial_reid``)."""
    return re.sub(r"[-_\s]", "", name).lower()


@dataclass(frozen=True)
class Layout:
    """Where a benchmark's images live: the dataset folder's accepted names and, inside it, the accepted names of
    the query and gallery folders (first name: the one distributed; the rest: known variants)."""

    title: str
    dataset_dirs: Tuple[str, ...]
    query_dirs: Tuple[str, ...]
    gallery_dirs: Tuple[str, ...]

    def expected(self) -> str:
        return (f"a folder named {' or '.join(self.dataset_dirs)} holding {' or '.join(self.query_dirs)} (query) and "
                f"{' or '.join(self.gallery_dirs)} (gallery)")


def _subdirs(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _pick(folder: Path, names: Sequence[str]) -> Optional[Path]:
    wanted = [_key(n) for n in names]
    found = {_key(p.name): p for p in _subdirs(folder)}
    return next((found[k] for k in wanted if k in found), None)


def find_dataset_dir(root: Path, layout: Layout, split: str = "") -> Tuple[Path, Path]:
    """``(query folder, gallery folder)`` of ``layout`` in a dataset folder directly under ``root`` or one folder
    below it (``root/partial_reid/PartialREID``); ``split`` is a folder between the dataset folder and them
    (P-DukeMTMC-reID: ``train``/``test``). The first complete copy wins; the error says which folders were expected
    and which were found."""
    bases = [b for b in (_pick(p, layout.dataset_dirs) for p in [root, *_subdirs(root)]) if b is not None]
    if not bases:
        raise FileNotFoundError(f"{layout.title} not found under {root}: expected {layout.expected()}; {root} holds "
                                f"{_listing(root)}. Download the benchmark and unpack it under data.root")
    errors = []
    for base in bases:
        try:
            return split_dirs(base, layout, split)
        except FileNotFoundError as err:
            errors.append(err)
    raise errors[0]


def split_dirs(base: Path, layout: Layout, split: str = "") -> Tuple[Path, Path]:
    """``(query folder, gallery folder)`` of ``layout`` inside the dataset folder ``base`` (names matched without
    case, ``-`` or ``_``); ``split`` as in :func:`find_dataset_dir`. Raises ``FileNotFoundError`` naming ``base``,
    what it holds and what was expected."""
    inner = _pick(base, [split]) if split else base
    query = _pick(inner, layout.query_dirs) if inner else None
    gallery = _pick(inner, layout.gallery_dirs) if inner else None
    if query is not None and gallery is not None:
        return query, gallery
    prefix = f"{split}/ holding " if split and inner is None else ""
    raise FileNotFoundError(f"{layout.title}: {inner or base} holds {_listing(inner or base)}; expected "
                            f"{prefix}{' or '.join(layout.query_dirs)} (query) and {' or '.join(layout.gallery_dirs)} "
                            f"(gallery)")


def _listing(folder: Path) -> str:
    if not folder.is_dir():
        return "nothing (it does not exist)"
    names = [p.name + "/" for p in _subdirs(folder)]
    return ", ".join(names[:12]) + (", ..." if len(names) > 12 else "") if names else "no folders"


def _pid(image: Path, split_dir: Path) -> int:
    """The identity: the folder an image sits in below ``split_dir``, else the leading digits of its name."""
    name = image.parent.name if image.parent != split_dir else image.name
    match = _LEADING_INT.match(name)
    if match is None:
        raise ValueError(f"{image}: no identity number in '{name}' (expected <pid>/<image> or <pid>_NN.<ext>)")
    return int(match.group(1))


def scan_split(split_dir: Path, camera: int) -> List[Item]:
    """``(path, pid, camera)`` of every image under ``split_dir`` (sorted; pids as written, not relabelled)."""
    found = sorted(str(p) for p in split_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                   and (p.is_file() or p.is_symlink()))
    paths = [Path(p) for p in drop_dangling_links(found, str(split_dir))]
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {split_dir}")
    return [(str(p), _pid(p, split_dir), camera) for p in paths]


def _check_counts(title: str, split: str, items: List[Item], images: int, ids: int) -> None:
    found_ids = len({pid for _, pid, _ in items})
    if (len(items), found_ids) != (images, ids):
        _logger.warning("%s %s: %d images of %d identities, but the benchmark has %d images of %d identities; results "
                        "on this copy are not comparable with published ones", title, split, len(items), found_ids,
                        images, ids)


class TestOnlyDataset(SafeImageDataset):
    """A benchmark with a query and a gallery but no training split: listed in ``data.targets`` only (built by
    :func:`init_without_training`)."""

    name: str  # the registered name
    layout: Layout
    counts: Dict[str, Tuple[int, int]] = {}  # split -> (images, identities) of the complete benchmark

    def __init__(self, root: str = "", mode: str = "train", verbose: bool = True, **kwargs) -> None:
        if mode == "train":
            raise ValueError(f"{self.layout.title} is a test-only benchmark (no training split); list {self.name} in "
                             f"data.targets and train on another dataset (by convention market1501)")
        base = Path(os.path.expanduser(root or "."))
        query_dir, gallery_dir = find_dataset_dir(base, self.layout)
        query, gallery = scan_split(query_dir, QUERY_CAMERA), scan_split(gallery_dir, GALLERY_CAMERA)
        if mode == "query":
            for split, items in (("query", query), ("gallery", gallery)):
                if split in self.counts:
                    _check_counts(self.layout.title, split, items, *self.counts[split])
        init_without_training(self, query, gallery, mode=mode, verbose=verbose, **kwargs)


def init_without_training(dataset: SafeImageDataset, query: List[Item], gallery: List[Item], mode: str,
                          verbose: bool = True, **kwargs) -> None:
    """Initialise ``dataset`` as a test set with no training split (``train`` empty, ``num_train_pids`` 0).

    torchreid's ``Dataset`` indexes every split's first item, so one gallery image stands in for the training list
    while it is built, and the list is emptied afterwards: nothing of the test set can reach training.
    """
    SafeImageDataset.__init__(dataset, gallery[:1], query, gallery, mode=mode, verbose=False, **kwargs)
    dataset.train, dataset.num_train_pids, dataset.num_train_cams, dataset.num_datasets = [], 0, 0, 0
    if verbose:
        dataset.show_summary()


@DATASETS.register(name="occluded_reid")
class OccludedREID(TestOnlyDataset):
    """Occluded-REID: 200 identities, 5 occluded and 5 whole-body images each (``<pid>/<pid>_NN.tif``).

    Query: the 1,000 occluded images (camera 0); gallery: the 1,000 whole-body images (camera 1). Test only.

    Reference: Zhuo et al., ICME 2018.
    """

    name = "occluded_reid"
    layout = Layout("Occluded-REID", ("Occluded_REID", "OccludedREID"), ("occluded_body_images",),
                    ("whole_body_images",))
    counts = {"query": (1000, 200), "gallery": (1000, 200)}


@DATASETS.register(name="partial_reid")
class PartialREID(TestOnlyDataset):
    """Partial-REID: 60 identities, 5 partial and 5 whole-body images each (``<pid>_NN.jpg``).

    Query: the 300 partial images (camera 0); gallery: the 300 whole-body images (camera 1). Test only.

    Reference: Zheng et al., ICCV 2015.
    """

    name = "partial_reid"
    layout = Layout("Partial-REID", ("Partial_REID", "PartialREID", "Partial-REID_Dataset"),
                    ("partial_body_images", "occluded_body_images"), ("whole_body_images",))
    counts = {"query": (300, 60), "gallery": (300, 60)}


@DATASETS.register(name="partial_ilids")
class PartialILIDS(TestOnlyDataset):
    """Partial-iLIDS: 119 identities, one partial and one whole-body image each (``<pid>.jpg``).

    Query: the 119 partial images (camera 0); gallery: the 119 whole-body images (camera 1). Test only.

    Reference: He et al., CVPR 2018 (from the iLIDS airport videos).
    """

    name = "partial_ilids"
    layout = Layout("Partial-iLIDS", ("Partial_iLIDS", "PartialiLIDS"), ("partial_body_images", "Probe"),
                    ("whole_body_images", "Gallery"))
    counts = {"query": (119, 119), "gallery": (119, 119)}


@DATASETS.register(name="p_dukemtmc_reid")
class PDukeMTMCReID(SafeImageDataset):
    """P-DukeMTMC-reID: ``{train,test}/{occluded_body_images,whole_body_images}/<pid>/*.jpg``.

    Train: both folders of ``train/`` (occluded images camera 0, whole-body camera 1, identities relabelled
    ``0..N-1``); query: ``test/occluded_body_images`` (camera 0); gallery: ``test/whole_body_images`` (camera 1).
    Two cameras in training give SIE two rows, which here stand for "occluded" and "whole body" - the same meaning
    they have at test time.

    Reference: Zhuo et al., ICME 2018.
    """

    layout = Layout("P-DukeMTMC-reID", ("P-DukeMTMC-reID", "P_DukeMTMC_reID"), ("occluded_body_images",),
                    ("whole_body_images",))

    def __init__(self, root: str = "", **kwargs) -> None:
        base = Path(os.path.expanduser(root or "."))
        train_occluded, train_whole = find_dataset_dir(base, self.layout, split="train")
        query_dir, gallery_dir = find_dataset_dir(base, self.layout, split="test")
        train = relabel_ids(scan_split(train_occluded, QUERY_CAMERA) + scan_split(train_whole, GALLERY_CAMERA))
        super().__init__(train, scan_split(query_dir, QUERY_CAMERA), scan_split(gallery_dir, GALLERY_CAMERA),
                         **kwargs)


TEST_ONLY = tuple(cls.name for cls in (OccludedREID, PartialREID, PartialILIDS))  # data.targets only
