"""Search your own images: rank a gallery for every query image with a trained model.

The gallery's features are cached in the output folder, keyed on everything that determines them: the gallery
paths with each file's content (SHA-256, so a file replaced in place is seen), the cameras, the checkpoint's SHA-256,
the model's config (the stored one plus any --set), the test-time preprocessing (size, normalisation) and the plugin
version; a later search with the same key reuses them, anything else re-extracts. Results: ``results.csv`` and
``results.json`` (each query's top-k gallery images with distances) and one picture per query in ``ranked/`` (the
query, then its top-k with the distance under each, as torchreid's ranked lists). ``ranked/`` shows one run: the
pictures the previous search listed in ``search_manifest.json`` are removed first; files the tool did not write are
left alone (and named in a warning).
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..data.io import read_image
from ..engine.evaluation import query_gallery_distances
from ..utils.atomic import atomic_open, atomic_path, write_text
from ..utils.finite import require_finite_features
from .inference import extract_features

__all__ = ["file_sha256", "files_sha256", "gallery_features", "rank_gallery", "write_results", "draw_ranked",
           "CACHE_NAME", "MANIFEST_NAME"]

_logger = logging.getLogger(__name__)
CACHE_NAME = "gallery_features.npz"
MANIFEST_NAME = "search_manifest.json"  # the pictures one search wrote into ranked/ (removed by the next search)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def files_sha256(paths: Sequence[str]) -> str:
    """One SHA-256 over every path and its content, in order (an unreadable file counts as such, not as an error:
    the extraction reports it)."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            content = file_sha256(path)
        except OSError as err:
            content = f"unreadable: {err.strerror}"
        digest.update(f"{path}\0{content}\n".encode())
    return digest.hexdigest()


def gallery_features(extract, paths: Sequence[str], cameras: Optional[Sequence[int]], key: Dict[str, Any],
                     out_dir: Path) -> Tuple[np.ndarray, List[str], bool]:
    """The gallery's features and kept paths: from ``out_dir``'s cache when it was made from the same ``paths``,
    ``cameras`` and ``key`` (checkpoint hash, preprocessing), else from ``extract(paths, cameras)`` (then cached).
    The third value says whether the cache was used."""
    cache = out_dir / CACHE_NAME
    wanted = {"paths": list(paths), "cameras": None if cameras is None else list(cameras), **key}
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as stored:
            if json.loads(str(stored["key"])) == wanted:
                _logger.info("gallery features from the cache %s", cache)
                return stored["features"], [str(p) for p in stored["kept"]], True
        _logger.info("the cache %s was made from another gallery or checkpoint: extracting again", cache)
    feats, kept = extract(paths, cameras)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_open(cache, "wb", feats.nbytes, "gallery feature cache") as handle:
        np.savez(handle, features=feats, kept=np.array(kept), key=np.array(json.dumps(wanted)))
    return feats, kept, False


def rank_gallery(query: np.ndarray, gallery: np.ndarray, top_k: int, metric: str = "euclidean",
                 normalize: bool = True, rerank: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Each query's ``top_k`` gallery indices (nearest first; ties by gallery order) and their distances."""
    dist = torch.from_numpy(query_gallery_distances(torch.from_numpy(query), torch.from_numpy(gallery), metric,
                                                    normalize, rerank))
    order = torch.sort(dist, dim=1, stable=True).indices[:, :top_k]
    return order.numpy(), dist.gather(1, order).numpy()


def write_results(out_dir: Path, queries: Sequence[str], gallery: Sequence[str], order: np.ndarray,
                  dist: np.ndarray) -> Tuple[Path, Path]:
    """``results.csv`` (query, rank, gallery, distance) and ``results.json`` ({query: [{gallery, distance}]})."""
    csv_path, json_path = out_dir / "results.csv", out_dir / "results.json"
    with atomic_open(csv_path, "w", what="search results", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["query", "rank", "gallery", "distance"])
        for q, path in enumerate(queries):
            for r, (g, d) in enumerate(zip(order[q], dist[q])):
                writer.writerow([path, r + 1, gallery[g], f"{d:.6f}"])
    payload = {path: [{"gallery": gallery[g], "distance": float(d)} for g, d in zip(order[q], dist[q])]
               for q, path in enumerate(queries)}
    write_text(json_path, json.dumps(payload, indent=1, allow_nan=False) + "\n", "search results")
    return csv_path, json_path


def draw_ranked(query: str, gallery: Sequence[str], distances: Sequence[float], out: Path,
                size: Tuple[int, int] = (128, 64)) -> None:
    """One row: the query (blue frame), then the ranked gallery images with their distance underneath."""
    height, width = size
    pad, text = 6, 16
    canvas = Image.new("RGB", ((len(gallery) + 1) * (width + pad) + pad + pad, height + text + 2 * pad), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (path, label) in enumerate([(query, "query")] + [(g, f"{d:.3g}") for g, d in zip(gallery, distances)]):
        x = pad + i * (width + pad) + (pad if i else 0)
        canvas.paste(read_image(path).resize((width, height)), (x, pad))
        if i == 0:
            draw.rectangle([x - 2, pad - 2, x + width + 1, pad + height + 1], outline=(40, 90, 220), width=2)
        draw.text((x + 2, pad + height + 2), label, fill=(0, 0, 0))
    with atomic_path(out, what="ranked-list picture", keep_suffix=True) as tmp:
        canvas.save(tmp)


def picture_name(index: int, query: str) -> str:
    return f"{index:03d}_{Path(query).stem}.png"


def feature_key(cfg, weights_hash: str, gallery: Sequence[str]) -> Dict[str, Any]:
    """What determines the gallery's features besides paths and cameras: the gallery files' content, the weights,
    the model's whole config (its stored config plus --set: e.g. ``lfem.eval_feature`` changes the feature), the
    input size and normalisation, and the plugin version."""
    from ..version import __version__
    return {"gallery_sha256": files_sha256(gallery), "weights_sha256": weights_hash,
            "config_sha256": hashlib.sha256(cfg.dump().encode()).hexdigest(), "plugin": __version__,
            "size": [cfg.data.height, cfg.data.width], "mean": list(cfg.data.norm_mean), "std": list(cfg.data.norm_std)}


def clear_previous_pictures(out_dir: Path) -> None:
    """Remove the pictures the previous search listed in its manifest (plain names inside ``ranked/`` only)."""
    manifest = out_dir / MANIFEST_NAME
    if not manifest.is_file():
        return
    try:
        names = json.loads(manifest.read_text()).get("pictures", [])
    except (ValueError, AttributeError):
        _logger.warning("%s is not a search manifest; the pictures it lists are left in place", manifest)
        return
    for name in names:
        if isinstance(name, str) and Path(name).name == name and name not in ("", ".", ".."):
            (out_dir / "ranked" / name).unlink(missing_ok=True)


def write_pictures(out_dir: Path, queries: Sequence[str], gallery: Sequence[str], order: np.ndarray, dist: np.ndarray,
                   size: Tuple[int, int]) -> None:
    """``ranked/<NNN>_<query>.png`` per query, after removing the previous run's; the manifest lists them."""
    clear_previous_pictures(out_dir)
    names = [picture_name(q, path) for q, path in enumerate(queries)]
    for q, path in enumerate(queries):
        draw_ranked(path, [gallery[g] for g in order[q]], dist[q], out_dir / "ranked" / names[q],
                    (max(size[0], 128), max(size[0], 128) * size[1] // size[0]))
    write_text(out_dir / MANIFEST_NAME, json.dumps({"pictures": names}, indent=1) + "\n", "search manifest")
    others = sorted(p.name for p in (out_dir / "ranked").iterdir() if p.name not in set(names))
    if others:
        _logger.warning("%s also holds %d file(s) this search did not write (left in place): %s", out_dir / "ranked",
                        len(others), ", ".join(others[:5]))


def run_search(model, cfg, queries: Sequence[str], gallery: Sequence[str], query_cams, gallery_cams, out_dir: Path,
               weights_hash: str, top_k: int = 10, rerank: bool = False, batch_size: int = 64,
               device: str = "cpu", skip_bad_images: bool = False) -> Dict[str, Any]:
    """Extract (gallery from the cache when valid), rank, write results and pictures; returns a summary."""
    size = (cfg.data.height, cfg.data.width)

    def extract(paths, cameras):
        return extract_features(model, paths, *size, list(cfg.data.norm_mean), list(cfg.data.norm_std), cameras,
                                batch_size, device, skip_bad_images)

    key = feature_key(cfg, weights_hash, gallery)
    g_feats, g_kept, cached = gallery_features(extract, gallery, gallery_cams, key, out_dir)
    require_finite_features(g_feats, g_kept, f"gallery features of {out_dir / CACHE_NAME}")  # a cache from before
    q_feats, q_kept = extract(queries, query_cams)
    order, dist = rank_gallery(q_feats, g_feats, min(top_k, len(g_kept)), cfg.test.dist_metric,
                               cfg.test.normalize_feature, rerank)
    csv_path, json_path = write_results(out_dir, q_kept, g_kept, order, dist)
    write_pictures(out_dir, q_kept, g_kept, order, dist, size)
    return {"queries": len(q_kept), "gallery": len(g_kept), "gallery_from_cache": cached, "csv": str(csv_path),
            "json": str(json_path), "pictures": str(out_dir / "ranked")}
