"""Throwaway datasets shaped like a real one (same image, identity and camera counts, same file layout; a few
generated images hard-linked many times), so that ``lfem-reid doctor --synthetic`` measures a run before the user has
the data.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import numpy as np
from PIL import Image
from yacs.config import CfgNode

from ..data.datasets import DUKE_SPLITS, OccludedDuke
from ..data.occluded_benchmarks import OccludedREID, PartialILIDS, PartialREID, PDukeMTMCReID
from .preflight import TORCHREID_LAYOUTS

__all__ = ["DatasetShape", "SHAPES", "write_synthetic", "synthetic_config"]


@dataclass(frozen=True)
class DatasetShape:
    """Image / identity counts of a dataset's splits and the file layout its loader reads.

    ``layout``: ``'duke'`` (``NNNN_cC_fXXXXXXX.jpg`` in each split folder: Occluded-Duke, DukeMTMC-reID, Market-1501),
    ``'pid_folder'`` (``<pid>/<pid>_NN.jpg``: Occluded-REID, P-DukeMTMC-reID), ``'flat'`` (``<pid>_NN.jpg``:
    Partial-REID, Partial-iLIDS) or ``'msmt'`` (``<pid>/<pid>_NNN_CC_..jpg`` plus MSMT17's ``list_<split>.txt``).
    """

    folder: str
    splits: Dict[str, str]  # split -> sub-folder (P-DukeMTMC-reID's train has two: train, train_whole)
    counts: Dict[str, tuple]  # split -> (images, identities)
    cameras: int
    image_size: tuple = (256, 128)  # person-crop sized (height, width)
    layout: str = "duke"
    first_pid: tuple = (0, 2000, 2000)  # first identity of train, query, gallery (Market-1501 allows 0..1501)


def _test_only_shape(cls, layout: str) -> DatasetShape:
    """A test-only benchmark's shape from its loader: the folders as distributed and the benchmark's counts."""
    names = cls.layout
    return DatasetShape(names.dataset_dirs[0], {"query": names.query_dirs[0], "gallery": names.gallery_dirs[0]},
                        cls.counts, 2, layout=layout)


_PDUKE = PDukeMTMCReID.layout
# Counts: Occluded-Duke as built by `lfem-reid prepare`; Market-1501, DukeMTMC-reID and MSMT17 as torchreid loads
# them; Occluded-REID, Partial-REID, Partial-iLIDS as published (their loaders' counts); P-DukeMTMC-reID as published
# by PVPM (Gao et al., CVPR 2020: 12,927 train images of 665 ids, split evenly here between its occluded and
# whole-body folders; not checked against a copy). Only the totals matter: they set the projected epoch and
# evaluation times. Folder names come from the loaders' layouts.
SHAPES: Dict[str, DatasetShape] = {
    "occluded_duke": DatasetShape(OccludedDuke.dataset_dir, DUKE_SPLITS,
                                  {"train": (15618, 702), "query": (2210, 519), "gallery": (17661, 1110)}, 8),
    "dukemtmcreid": DatasetShape(TORCHREID_LAYOUTS["dukemtmcreid"][1][0], DUKE_SPLITS,
                                 {"train": (16522, 702), "query": (2228, 702), "gallery": (17661, 1110)}, 8),
    "market1501": DatasetShape(TORCHREID_LAYOUTS["market1501"][1][0], DUKE_SPLITS,
                               {"train": (12936, 751), "query": (3368, 750), "gallery": (15913, 751)}, 6,
                               first_pid=(1, 752, 751)),
    "msmt17": DatasetShape(TORCHREID_LAYOUTS["msmt17"][1][0], {"train": "train", "query": "test", "gallery": "test"},
                           {"train": (32621, 1041), "query": (11659, 3060), "gallery": (82161, 3060)}, 15,
                           layout="msmt"),
    "occluded_reid": _test_only_shape(OccludedREID, "pid_folder"),
    "partial_reid": _test_only_shape(PartialREID, "flat"),
    "partial_ilids": _test_only_shape(PartialILIDS, "flat"),
    "p_dukemtmc_reid": DatasetShape(_PDUKE.dataset_dirs[0], {"train": f"train/{_PDUKE.query_dirs[0]}",
                                                             "train_whole": f"train/{_PDUKE.gallery_dirs[0]}",
                                                             "query": f"test/{_PDUKE.query_dirs[0]}",
                                                             "gallery": f"test/{_PDUKE.gallery_dirs[0]}"},
                                    {"train": (6464, 665), "train_whole": (6463, 665), "query": (2163, 634),
                                     "gallery": (9053, 634)}, 2, layout="pid_folder"),
}


def _items(split: str, images: int, ids: int, cameras: int, first_pid: int) -> List[tuple]:
    """``(pid, camera, index)`` of every image: spread over ``ids`` identities, cameras (1-based) cycling so each
    identity spans several and a query's camera differs from its gallery images' first one."""
    per_id = np.full(ids, images // ids)
    per_id[:images % ids] += 1
    items = []
    for k, count in enumerate(per_id):
        for i in range(count):
            items.append((first_pid + k, (k + i + (1 if split == "query" else 0)) % cameras + 1, len(items)))
    return items


def _file_name(layout: str, pid: int, camera: int, index: int, split: str) -> str:
    if layout == "duke":
        return f"{pid:04d}_c{camera}_f{index:07d}.jpg"
    if layout == "pid_folder":
        return f"{pid:04d}/{pid:04d}_{index:05d}.jpg"
    if layout == "flat":
        return f"{pid:04d}_{index:05d}.jpg"
    # MSMT17: query and gallery share test/, so the split goes into the name's time field
    return f"{pid:04d}/{pid:04d}_{index:03d}_{camera:02d}_0303{split}_{index:04d}_0.jpg"


def write_synthetic(name: str, root: str | os.PathLike, num_distinct: int = 8, seed: int = 0) -> Path:
    """Write a dataset shaped like ``name`` under ``root`` (hard links to ``num_distinct`` generated images)."""
    if name not in SHAPES:
        raise KeyError(f"no synthetic shape for dataset {name!r}; known: {sorted(SHAPES)} (or run without "
                       f"--synthetic on the real data)")
    shape = SHAPES[name]
    base = Path(root) / shape.folder
    rng = np.random.default_rng(seed)
    sources = []
    for i in range(num_distinct):
        pixels = rng.integers(0, 256, size=(*shape.image_size, 3), dtype=np.uint8)
        sources.append(base / f".source{i}.jpg")
        sources[-1].parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(sources[-1], quality=90)
    # query identities are the first gallery identities (the rest are distractors); train identities are disjoint
    for split, sub in shape.splits.items():
        first = shape.first_pid[0 if split.startswith("train") else 1 if split == "query" else 2]
        names = [_file_name(shape.layout, pid, cam, i, split)
                 for pid, cam, i in _items(split, *shape.counts[split], shape.cameras, first)]
        for i, file_name in enumerate(names):
            (base / sub / file_name).parent.mkdir(parents=True, exist_ok=True)
            os.link(sources[i % num_distinct], base / sub / file_name)
        if shape.layout == "msmt":  # MSMT17 reads its splits from list files: "<path under the split dir> <pid>"
            listed = [f"{n} {n.split('/')[0].lstrip('0') or '0'}\n" for n in names]
            (base / f"list_{split}.txt").write_text("".join(listed))
            (base / "list_val.txt").touch()
    return base


def synthetic_config(cfg: CfgNode, root: str) -> CfgNode:
    """``cfg`` with every source and target dataset written synthetically under ``root``."""
    for name in dict.fromkeys(list(cfg.data.sources) + list(cfg.data.targets)):
        write_synthetic(name, root)
    out = cfg.clone()
    out.defrost()
    out.data.root = root
    out.freeze()
    return out
