"""Reading images and ReID file names: the one place that decodes an image file or parses ``NNNN_cC`` names.

Used by the datasets (training and evaluation), by inference (extract, search, visualize) and by the benchmarks.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

__all__ = ["IMAGE_SUFFIXES", "BadImageError", "read_image", "to_viewer_rgb", "list_images", "parse_reid_name",
           "cameras_from_names", "drop_dangling_links"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".webp", ".tif", ".tiff")
_logger = logging.getLogger(__name__)
_REID_NAME = re.compile(r"^(-?\d+)_c(\d+)")


class BadImageError(OSError):
    """An image file that cannot be decoded."""


def read_image(path: str) -> Image.Image:
    """Decode ``path`` fully as the RGB picture an image viewer shows (see :func:`to_viewer_rgb`).

    Returns:
        An ``RGB`` image, upright (EXIF orientation applied).

    Raises:
        BadImageError: the file cannot be decoded, or holds a mode with no agreed display (named in the message);
            torchreid's own reader would retry forever.
    """
    try:
        with Image.open(path) as img:
            img.load()
            return to_viewer_rgb(img, path)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
        if isinstance(err, BadImageError):
            raise
        reason = (f"a symbolic link to {os.readlink(path)}, which does not exist"
                  if os.path.islink(path) and not os.path.exists(path) else err)
        raise BadImageError(f"{path}: cannot read image ({reason}). {_SKIP_HINT}") from err


_SKIP_HINT = ("Remove or replace the file, or skip unreadable images (extract/search: --skip-bad-images; datasets: "
              "data.skip_bad_images True)")
_DEEP_MAX = 65535  # integer greyscale ("I;16", "I;16B", "I"): 16-bit samples, as PNG and TIFF store them
_WHITE = (255, 255, 255, 255)


def to_viewer_rgb(img: Image.Image, path: str = "<image>") -> Image.Image:
    """``img`` (any mode Pillow decodes) as the 8-bit RGB picture a viewer shows.

    * EXIF orientation is applied (``ImageOps.exif_transpose``): a phone photo tagged "rotate 90" is a person
      standing in every viewer, and OpenCV's ``imread`` (which most ReID crops went through) applies it too.
      Detector crops carry no such tag, so they are unchanged.
    * 16-bit greyscale (``I;16``, ``I;16B``, ``I``): scaled ``v * 255 / 65535`` (rounded); Pillow's own
      conversion clips to 255, turning most of the picture white. Values outside 0..65535 raise.
    * 32-bit float (``F``): read as 0..1 (the float convention of TIFF tools, GIMP and scikit-image), scaled by
      255; values outside 0..1 raise, as their display is ambiguous.
    * Transparency (``RGBA``, ``LA``, ``PA``, ``P``/``L``/``RGB`` with a transparent colour): composited over white,
      as a viewer shows it on a page (dropping alpha would show whatever colour the transparent pixels hold).
    * Everything else (``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ...): Pillow's ``convert("RGB")``.

    Raises:
        BadImageError: a deep image with values out of range, naming ``path`` and the range found.
    """
    if img.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I"):
        return _scaled_grey(img, path, _DEEP_MAX, "16-bit greyscale")
    if img.mode == "F":
        return _scaled_grey(img, path, 1.0, "floating-point greyscale")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba).convert("RGB")
    return img.convert("RGB")


def _scaled_grey(img: Image.Image, path: str, top: float, kind: str) -> Image.Image:
    """A one-channel deep image whose samples span ``0..top`` as 8-bit RGB (``round(v * 255 / top)``)."""
    values = np.asarray(img, dtype=np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if not (np.isfinite(values).all() and low >= 0 and high <= top):
        raise BadImageError(f"{path}: {kind} image (mode {img.mode}) with values {low:g}..{high:g}, outside the "
                            f"0..{top:g} it is displayed over; save it as 8-bit (e.g. PNG mode L or RGB). {_SKIP_HINT}")
    grey = np.round(values * (255.0 / top)).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")


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


def drop_dangling_links(paths: Sequence[str], where: str, skip: bool = False) -> List[str]:
    """``paths`` without the symbolic links whose targets are gone: refused (naming how many and the first ones),
    or with ``skip`` dropped with a warning and the count, as unreadable images are.

    Raises:
        BadImageError: some paths are dangling links and ``skip`` is off.
    """
    dangling = [p for p in paths if os.path.islink(p) and not os.path.exists(p)]
    if not dangling:
        return list(paths)
    shown = ", ".join(f"{p} -> {os.readlink(p)}" for p in dangling[:3])
    text = f"{where}: {len(dangling)} of {len(paths)} image files are symbolic links whose targets are gone ({shown})"
    if not skip:
        raise BadImageError(f"{text}. Restore the targets or remove the links, or skip unreadable images "
                            f"(data.skip_bad_images True)")
    _logger.warning("%s: skipped", text)
    gone = set(dangling)
    return [p for p in paths if p not in gone]


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
    """Camera ids parsed from ``NNNN_cC...`` names.

    Raises:
        ValueError: naming the first file without a camera; callers add the options that work for them.
    """
    out = []
    for p in paths:
        try:
            out.append(parse_reid_name(p)[1])
        except ValueError:
            raise ValueError(f"{p}: no camera in the file name (expected 'NNNN_cC_...', e.g. "
                             f"0001_c2_f001.jpg)") from None
    return out
