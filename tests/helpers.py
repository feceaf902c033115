"""Shared test helpers: a tiny synthetic torchreid dataset written to disk, engines on tiny models."""
from __future__ import annotations

import io
import types
from pathlib import Path

import numpy as np
from PIL import Image

from lfem_plugin import _torchreid
from lfem_plugin.data.datasets import SafeImageDataset
from lfem_plugin.engine import LFEMEngine
from lfem_plugin.losses import MultiBranchLoss
from lfem_plugin.optim import WarmupCosineLR, build_optimizer
from lfem_plugin.registry import MODELS

TR = _torchreid.root()
CPU_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "orl" / "lfem_vit_tiny_64x32_cpu.yaml"
# Overrides that point the CPU config at the synthetic set: tiny batches, a checkpoint every epoch, no mid-run eval.
SMALL = ["data.sources", "['synthetic_reid']", "data.targets", "['synthetic_reid']", "train.batch_size", "8",
         "sampler.num_instances", "2", "test.batch_size", "8", "use_gpu", "False", "train.checkpoint_period", "1",
         "test.eval_freq", "-1"]


def write_synthetic_reid(root: Path, num_ids: int = 6, per_id: int = 4, size=(32, 16)) -> None:
    """Images whose colour pattern depends on the identity (plus noise); Duke-style names, 2 cameras."""
    rng = np.random.default_rng(0)
    for split, ids, count in (("train", range(num_ids), per_id), ("query", range(100, 104), 1),
                              ("gallery", range(100, 104), 3)):
        folder = root / "synthetic_reid" / split
        folder.mkdir(parents=True, exist_ok=True)
        for pid in ids:
            base = rng.integers(0, 255, size=(4, 2, 3))
            for i in range(count):
                cam = 1 if split == "query" else 2 if split == "gallery" else 1 + i % 2
                img = np.kron(base, np.ones((size[0] // 4, size[1] // 2, 1))) + rng.normal(0, 20, (*size, 3))
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
                    folder / f"{pid:04d}_c{cam}_f{i:07d}.jpg")


class SyntheticReID(SafeImageDataset):
    """Test dataset over :func:`write_synthetic_reid`'s folder."""

    def __init__(self, root: str = "", **kwargs) -> None:
        from lfem_plugin.data.datasets import _scan
        base = Path(root) / "synthetic_reid"
        super().__init__(_scan(base / "train", True), _scan(base / "query", False), _scan(base / "gallery", False),
                         **kwargs)


def register_synthetic() -> None:
    _torchreid.add_image_dataset("synthetic_reid", SyntheticReID)


def tiny_engine(model=None, num_classes: int = 4, max_epoch: int = 10, dm=None):
    """An LFEMEngine on the tiny model; ``dm`` may be a stub when only forward_backward is used."""
    model = model or MODELS.get("lfem_vit_tiny")(num_classes=num_classes, loss="triplet")
    optimizer = build_optimizer(model, lr=0.01)
    scheduler = WarmupCosineLR(optimizer, max_epoch=max_epoch, warmup_epochs=1)
    dm = dm or types.SimpleNamespace(train_loader=None, test_loader={})
    names = getattr(model, "module", model).branch_names
    engine = LFEMEngine(dm, model, optimizer, scheduler, MultiBranchLoss(names), use_gpu=False)
    return engine


# ---- fake trees of the occluded / partial benchmarks (uniform 4x8 images; only names and counts matter) -------
def _image_bytes(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 8), (120, 30, 200)).save(buf, format=fmt)
    return buf.getvalue()


_BYTES = {".jpg": _image_bytes("JPEG"), ".tif": _image_bytes("TIFF")}


def _write(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_BYTES[path.suffix])


def occluded_reid_tree(root: Path, ids: int = 200, per_id: int = 5, name: str = "Occluded_REID") -> Path:
    """``<name>/{occluded_body_images,whole_body_images}/<pid>/<pid>_NN.tif`` (pids 001..)."""
    for folder in ("occluded_body_images", "whole_body_images"):
        for pid in range(1, ids + 1):
            for n in range(1, per_id + 1):
                _write(root / name / folder / f"{pid:03d}" / f"{pid:03d}_{n:02d}.tif")
    return root


def partial_reid_tree(root: Path, ids: int = 60, per_id: int = 5, query: str = "partial_body_images",
                      name: str = "Partial_REID") -> Path:
    """``<name>/{<query>,whole_body_images}/<pid>_NN.jpg`` (flat)."""
    for folder in (query, "whole_body_images"):
        for pid in range(1, ids + 1):
            for n in range(1, per_id + 1):
                _write(root / name / folder / f"{pid:03d}_{n:02d}.jpg")
    return root


def partial_ilids_tree(root: Path, ids: int = 119, folders=("partial_body_images", "whole_body_images"),
                       name: str = "Partial_iLIDS") -> Path:
    """``<name>/{<query>,<gallery>}/<pid>.jpg``, one image per identity and folder."""
    for folder in folders:
        for pid in range(1, ids + 1):
            _write(root / name / folder / f"{pid:03d}.jpg")
    return root


def p_duke_tree(root: Path, name: str = "P-DukeMTMC-reID") -> Path:
    """Train ids 5, 9, 12 (occluded 2 + whole 3 images each); test ids 20, 21 (occluded 1, whole 2)."""
    for split, ids, counts in (("train", (12, 5, 9), (2, 3)), ("test", (20, 21), (1, 2))):
        for folder, count in zip(("occluded_body_images", "whole_body_images"), counts):
            for pid in ids:
                for n in range(count):
                    _write(root / name / split / folder / f"{pid:04d}" / f"{pid:04d}_c{n + 1}_f{n:07d}.jpg")
    return root
