"""Reading images and ReID file names: the one place that decodes an image file or parses ``NNNN_cC`` names.

Used by the datasets (training and evaluation), by inference (extract, search, visualize) and by the benchmarks.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from PIL import Image, UnidentifiedImageError

__all__ = ["IMAGE_SUFFIXES", "BadImageError", "read_image", "list_images", "parse_reid_name", "cameras_from_names"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".webp", ".tif", ".tiff")
_REID_NAME = re.compile(r"^(-?\d+)_c(\d+)")


class BadImageError(OSError):
    """An image file that cannot be decoded."""


def read_image(path: str) -> Image.Image:
    """Decode ``path`` fully as RGB; raises :class:`BadImageError` naming the file (torchreid retries forever)."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
        raise BadImageError(f"{path}: cannot read image ({err}). Remove or replace the file, or skip unreadable "
                            f"images (extract: --skip-bad-images; datasets: data.skip_bad_images True)") from err


def list_images(source: str) -> List[str]:
    """Images under a folder (recursive, sorted) or listed one per line in a text file."""
    path = Path(source)
    if path.is_dir():
        found = sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    elif path.is_file():
        base = path.parent
        found = [str(p if Path(p).is_absolute() else base / p) for p in
                 (line.strip() for line in path.read_text().splitlines()) if p]
    else:
        raise FileNotFoundError(f"{source} is neither a folder of images nor a list file")
    if not found:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {source}")
    return found


def parse_reid_name(path: str, max_camera: Optional[int] = None) -> Tuple[int, int]:
    """``(pid, camid)`` from a Market/Duke-style basename ``NNNN_cC...`` (camid = C - 1); only the basename is read.

    ``max_camera`` rejects camera numbers above it (DukeMTMC-reID has 8).
    """
    match = _REID_NAME.match(os.path.basename(path))
    if match is None:
        raise ValueError(f"{path}: file name does not follow the 'NNNN_cC_...' pattern of Market-1501/DukeMTMC-reID")
    pid, cam = int(match.group(1)), int(match.group(2))
    if cam < 1 or (max_camera is not None and cam > max_camera):
        raise ValueError(f"{path}: camera {cam} outside 1..{max_camera or 'N'}")
    return pid, cam - 1


def cameras_from_names(paths: Sequence[str]) -> List[int]:
    """Camera ids parsed from ``NNNN_cC...`` names; the error says how to pass cameras otherwise."""
    out = []
    for p in paths:
        try:
            out.append(parse_reid_name(p)[1])
        except ValueError:
            raise ValueError(f"{p}: no camera in the file name ('NNNN_cC_...'); pass --cameras explicitly") from None
    return out
