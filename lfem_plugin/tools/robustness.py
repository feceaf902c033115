"""Occlusion-robustness curves: rank-1 and mAP of any trained model while occluders of a known kind, area and
position (:mod:`lfem_plugin.data.query_occluders`) cover the queries of a Market-layout test folder, the gallery clean.

The gallery's features are extracted once, the clean queries once (the area-0 point of every curve: the plain
evaluation, torchreid's protocol, :func:`~lfem_plugin.metrics.evaluate_rank`), and only the occluded queries per point.
Donors of ``scene`` and ``person`` occluders are images of identities that are neither the query's nor in its
gallery when the folder has a training split (``bounding_box_train/``, or any ``donors`` folder given); without one
they are the other queries (another identity than the query's, and one the gallery holds: say so when reporting).
Each point's boxes are written in the ``occlusion.json`` format (:mod:`lfem_plugin.data.occlusion`); with
``save_images`` the point's folder is a Market-layout folder (``query/`` of occluded PNGs, ``bounding_box_test``
linked to the gallery) that ``lfem-reid analyze-gates --dataset market_layout`` reads.
"""
from __future__ import annotations

import itertools
import logging
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from ..data.io import read_image
from ..data.market_layout import scan_market_split
from ..data.occlusion import write_occlusion_file
from ..data.query_occluders import QUERY_OCCLUDER_KINDS, check_sweep, occlude_query
from ..data.transforms import build_test_transform
from ..engine.evaluation import query_gallery_distances
from ..metrics import evaluate_rank
from ..models.interface import ReIDModel
from ..models.sie import camera_argument

__all__ = ["TestFolder", "read_test_folder", "embed", "score", "sweep", "point_name"]

_logger = logging.getLogger(__name__)
Item = Tuple[str, int, int]


class TestFolder:
    """The query, gallery and donor items ``(path, pid, camid)`` of a Market-layout test folder."""

    def __init__(self, query: List[Item], gallery: List[Item], donors: List[Item], donor_source: str) -> None:
        self.query, self.gallery, self.donors, self.donor_source = query, gallery, donors, donor_source


def _split(folder: Path, name: str, role: str) -> List[Item]:
    path = folder / name
    if not path.is_dir():
        held = sorted(p.name for p in folder.iterdir() if p.is_dir())
        raise FileNotFoundError(f"{folder} has no {name}/ ({role}); it holds {held}: give a Market-layout folder "
                                f"(query/, bounding_box_test/) or name the folder with --{role} NAME")
    return scan_market_split(path)


def read_test_folder(folder: str | Path, query: str = "query", gallery: str = "bounding_box_test",
                     donors: Optional[str | Path] = None) -> TestFolder:
    """Read ``folder``'s queries and gallery, and the donors: ``donors`` (a folder of ``NNNN_cC`` images), else
    ``folder/bounding_box_train`` when present, else the queries. Raises ``FileNotFoundError`` naming what is
    missing."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"test folder {folder} does not exist; pass --data DIR holding query/ and "
                                f"bounding_box_test/")
    q, g = _split(folder, query, "query"), _split(folder, gallery, "gallery")
    if donors is not None:
        if not Path(donors).is_dir():
            raise FileNotFoundError(f"--donors {donors} is not a folder of NNNN_cC_*.jpg images")
        return TestFolder(q, g, scan_market_split(Path(donors)), str(donors))
    if (folder / "bounding_box_train").is_dir():
        return TestFolder(q, g, scan_market_split(folder / "bounding_box_train"), "bounding_box_train")
    _logger.warning("%s has no bounding_box_train/: the donors of scene/person occluders are the other queries "
                    "(identities the gallery holds); pass --donors DIR for disjoint identities", folder)
    return TestFolder(q, g, q, "query (other identities)")


@torch.no_grad()
def embed(model: torch.nn.Module, images: Sequence[Image.Image], transform, cameras: Optional[Sequence[int]],
          batch_size: int = 64) -> torch.Tensor:
    """Features ``(N, D)`` of PIL ``images`` (``cameras``: one SIE camera per image, or None); plugin models get
    the cameras, torchreid models only the images (as the evaluation does)."""
    feats = []
    for start in range(0, len(images), batch_size):
        batch = torch.stack([transform(im) for im in images[start:start + batch_size]])
        if isinstance(model, ReIDModel):
            cams = None if cameras is None else torch.as_tensor(list(cameras[start:start + batch_size]))
            feats.append(model(batch, camera=cams).float())
        else:
            feats.append(model(batch).float())
    return torch.cat(feats)


def score(qf: torch.Tensor, gf: torch.Tensor, query: List[Item], gallery: List[Item], dist_metric: str,
          normalize: bool) -> Dict[str, float]:
    """Rank-1 and mAP (fractions) of torchreid's protocol: same-identity same-camera gallery entries removed."""
    distmat = query_gallery_distances(qf, gf, dist_metric, normalize)
    cmc, mAP = evaluate_rank(distmat, np.array([q[1] for q in query]), np.array([g[1] for g in gallery]),
                             np.array([q[2] for q in query]), np.array([g[2] for g in gallery]))
    return {"rank1": float(cmc[0]), "mAP": float(mAP)}


def point_name(kind: str, position: str, area: float) -> str:
    return f"{kind}_{position}_{int(round(area * 100)):02d}"


def _donor_array(donors: List[Item], pid: int, rng: np.random.Generator, size_wh, cache: Dict) -> np.ndarray:
    """A donor image of another identity than ``pid``, resized to ``size_wh`` (bicubic, as the val split does)."""
    others = [d for d in donors if d[1] != pid]
    if not others:
        raise ValueError(f"no donor image of another identity than {pid}; pass --donors DIR")
    path = others[int(rng.integers(len(others)))][0]
    key = (path, tuple(size_wh))
    if key not in cache:
        cache[key] = np.asarray(read_image(path).convert("RGB").resize(size_wh, Image.BICUBIC))
    return cache[key]


def _occluded_queries(queries: List[np.ndarray], data: TestFolder, kind: str, area: float, position: str,
                      seed: int, fill, cache: Dict) -> Tuple[List[np.ndarray], List[tuple]]:
    images, boxes = [], []
    for i, (image, item) in enumerate(zip(queries, data.query)):
        rng = np.random.default_rng([seed, QUERY_OCCLUDER_KINDS.index(kind), i])
        donor = _donor_array(data.donors, item[1], rng, image.shape[1::-1], cache)
        occluded, box = occlude_query(image, donor, kind, area, position, rng, fill)
        images.append(occluded)
        boxes.append(box)
    return images, boxes


def _write_point(out: Path, name: str, data: TestFolder, images, boxes, kind: str, save_images: bool) -> Path:
    """``out/name/occlusion.json`` (+ ``query/`` PNGs and a ``bounding_box_test`` link with ``save_images``)."""
    folder = out / name
    (folder / "query" if save_images else folder).mkdir(parents=True, exist_ok=True)
    entries = {}
    for item, image, (top, left, h, w) in zip(data.query, images, boxes):
        file = Path(item[0]).stem + ".png" if save_images else Path(item[0]).name
        if save_images:
            Image.fromarray(image).save(folder / "query" / file)
        height, width = image.shape[:2]
        entries[file] = {"box_xyxy": [left, top, left + w, top + h], "image_size_wh": [width, height], "kind": kind,
                         "occluded_fraction": round(h * w / (height * width), 4)}
    link = folder / "bounding_box_test"
    if save_images and not link.exists():
        link.symlink_to(Path(data.gallery[0][0]).parent.resolve(), target_is_directory=True)
    return write_occlusion_file(folder / "occlusion.json", entries, about=f"lfem-reid robustness point {name}")


def sweep(model: torch.nn.Module, data: TestFolder, kinds: Sequence[str], areas: Sequence[float],
          positions: Sequence[str], out: Path, size_hw: Tuple[int, int], mean, std, sie: str = "off",
          dist_metric: str = "euclidean", normalize: bool = True, seed: int = 0, batch_size: int = 64,
          save_images: bool = False) -> Dict[str, Any]:
    """Every (kind, position, area) point's rank-1/mAP (fractions), the clean score and each point's boxes file
    under ``out``; ``size_hw``, ``mean``, ``std``: the checkpoint's input; ``sie``: how the cameras reach SIE
    (``cameras``, ``mean``, ``off``). Raises ``ValueError`` for a bad kind, area or position before any work."""
    from tqdm import tqdm
    check_sweep(kinds, areas, positions)
    model.eval()
    start, transform = time.perf_counter(), build_test_transform(*size_hw, mean, std)
    fill = tuple(int(round(255 * m)) for m in mean)
    q_cams = camera_argument([q[2] for q in data.query], sie)
    g_cams = camera_argument([g[2] for g in data.gallery], sie)
    gf = embed(model, [read_image(g[0]) for g in data.gallery], transform, g_cams, batch_size)
    queries = [np.asarray(read_image(q[0]).convert("RGB")) for q in data.query]
    clean = score(embed(model, [Image.fromarray(q) for q in queries], transform, q_cams, batch_size), gf,
                  data.query, data.gallery, dist_metric, normalize)
    points, cache = [], {}
    grid = list(itertools.product(kinds, positions, sorted(set(areas))))
    for kind, position, area in tqdm(grid, desc="robustness", unit="point", disable=not sys.stderr.isatty()):
        images, boxes = _occluded_queries(queries, data, kind, area, position, seed, fill, cache)
        boxes_file = _write_point(out, point_name(kind, position, area), data, images, boxes, kind, save_images)
        result = clean if area == 0 else score(embed(model, [Image.fromarray(im) for im in images], transform,
                                                     q_cams, batch_size), gf, data.query, data.gallery,
                                               dist_metric, normalize)
        fraction = float(np.mean([h * w / np.prod(im.shape[:2]) for (_, _, h, w), im in zip(boxes, images)]))
        points.append({"kind": kind, "position": position, "area": float(area), "occluded_fraction": fraction,
                       **result, "boxes": str(boxes_file)})
    return {"clean": clean, "points": points, "seed": seed, "kinds": list(kinds), "positions": list(positions),
            "areas": sorted(set(float(a) for a in areas)), "queries": len(data.query), "gallery": len(data.gallery),
            "donors": data.donor_source, "sie": sie, "dist_metric": dist_metric, "normalize_feature": normalize,
            "image_size_hw": list(size_hw), "wall_s": round(time.perf_counter() - start, 1)}
