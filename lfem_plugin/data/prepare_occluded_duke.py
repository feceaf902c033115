"""Build Occluded-DukeMTMC from the original ``DukeMTMC-reID.zip`` and the three official name lists.

Conversion rules of the dataset's authors: for each split, a listed image is taken from the same-named folder of
the original dataset (``bounding_box_train``, ``query``, ``bounding_box_test``) and, when it is not there, from
the original ``bounding_box_test`` (some occluded gallery images became queries). Files are read straight from the
zip (no full extraction), written to a temporary folder, verified, and only then renamed to
``<root>/Occluded_Duke``: an interrupted or failed run never leaves a folder the loader would accept.

Reference: Miao et al., "Pose-Guided Feature Alignment for Occluded Person Re-Identification", ICCV 2019.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional

from .datasets import DUKE_SPLITS, parse_duke_name

__all__ = ["prepare_occluded_duke", "read_lists", "OFFICIAL_STATS", "LISTS_URL"]

_logger = logging.getLogger(__name__)

LISTS_URL = "https://raw.githubusercontent.com/lightas/Occluded-DukeMTMC-Dataset/master/Occluded_Duke/{split}.list"
# images, identities, cameras per split, from the official lists
OFFICIAL_STATS = {"train": (15618, 702, 8), "query": (2210, 519, 8), "gallery": (17661, 1110, 8)}


def read_lists(lists_dir: Optional[Path]) -> Dict[str, List[str]]:
    """The three lists from ``lists_dir``, or downloaded from the authors' repository when it is ``None``."""
    out = {}
    for split in DUKE_SPLITS:
        if lists_dir is not None:
            path = Path(lists_dir) / f"{split}.list"
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found; --lists must hold train.list, query.list, gallery.list")
            text = path.read_text()
        else:
            url = LISTS_URL.format(split=split)
            try:
                with urllib.request.urlopen(url, timeout=30) as response:
                    text = response.read().decode()
            except (urllib.error.URLError, OSError) as err:
                raise RuntimeError(f"could not download {url} ({err}); without network access, get the three .list "
                                   f"files of lightas/Occluded-DukeMTMC-Dataset and pass their folder as --lists")
        out[split] = [line.strip() for line in text.splitlines() if line.strip()]
    return out


def split_stats(names: List[str]):
    labels = [parse_duke_name(n) for n in names]
    return len(names), len({p for p, _ in labels}), len({c for _, c in labels})


def _zip_index(archive: zipfile.ZipFile) -> Dict[str, Dict[str, str]]:
    """folder name -> {basename -> member name} for the original split folders inside the zip."""
    index: Dict[str, Dict[str, str]] = {name: {} for name in DUKE_SPLITS.values()}
    for member in archive.namelist():
        parts = member.rstrip("/").split("/")
        if len(parts) >= 2 and parts[-2] in index and parts[-1].endswith(".jpg"):
            index[parts[-2]][parts[-1]] = member
    return index


def prepare_occluded_duke(duke_zip: Path, root: Path, lists_dir: Optional[Path] = None,
                          overwrite: bool = False) -> Path:
    """Build ``<root>/Occluded_Duke`` and return it; raises with the missing files listed on any problem."""
    duke_zip, root = Path(duke_zip), Path(root)
    target = root / "Occluded_Duke"
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; remove it or pass --overwrite")
    if not duke_zip.is_file():
        raise FileNotFoundError(f"{duke_zip} not found; it is the original DukeMTMC-reID.zip")
    lists = read_lists(lists_dir)
    for split, names in lists.items():
        stats = split_stats(names)
        if stats != OFFICIAL_STATS[split]:
            _logger.warning("%s.list has %s (images, ids, cameras); the official list has %s", split, stats,
                            OFFICIAL_STATS[split])
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".Occluded_Duke.tmp-"))
    try:
        try:
            with zipfile.ZipFile(duke_zip) as archive:
                index = _zip_index(archive)
                missing = _copy_splits(archive, index, lists, tmp)
        except (zipfile.BadZipFile, zlib.error, EOFError) as err:
            raise ValueError(f"{duke_zip} is not a complete zip archive ({err}); it may be truncated or corrupt: "
                             f"download DukeMTMC-reID.zip again (nothing was written under {root})") from None
        if missing:
            shown = ", ".join(missing[:10])
            raise FileNotFoundError(f"{len(missing)} listed images are not in {duke_zip} (e.g. {shown}); is it the "
                                    f"complete original DukeMTMC-reID.zip?")
        _verify(tmp, lists)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _logger.info("Occluded-DukeMTMC ready at %s", target)
    return target


def _copy_splits(archive: zipfile.ZipFile, index, lists, out: Path) -> List[str]:
    missing = []
    for split, names in lists.items():
        folder = DUKE_SPLITS[split]
        (out / folder).mkdir()
        for name in names:
            member = index[folder].get(name) or index["bounding_box_test"].get(name)
            if member is None:
                missing.append(f"{split}/{name}")
                continue
            with archive.open(member) as src, open(out / folder / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return missing


def _verify(folder: Path, lists) -> None:
    for split, names in lists.items():
        found = sorted(p.name for p in (folder / DUKE_SPLITS[split]).glob("*.jpg"))
        if found != sorted(names) or Counter(found) != Counter(names):
            raise RuntimeError(f"{split}: built {len(found)} images but the list has {len(names)}")
        _logger.info("%s: %d images, %d ids, %d cameras", split, *split_stats(found))
