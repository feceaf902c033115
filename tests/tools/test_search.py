"""``lfem-reid search``: ranked gallery per query, results files, pictures, the gallery feature cache."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from lfem_plugin.cli import main
from lfem_plugin.config import load_config
from lfem_plugin.registry import MODELS
from lfem_plugin.tools.search import CACHE_NAME, gallery_features, rank_gallery


def test_rank_gallery_on_hand_made_features():
    query = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    gallery = np.array([[0.0, 2.0], [3.0, 0.1], [1.0, 1.0], [0.0, 1.0]], np.float32)
    order, dist = rank_gallery(query, gallery, top_k=3, normalize=False)
    assert order[1, 0] == 3  # an exact match first
    expected = ((query[:, None] - gallery[None]) ** 2).sum(-1)
    np.testing.assert_allclose(dist, np.take_along_axis(expected, order, 1), rtol=1e-6)
    assert order[0].tolist() == np.argsort(expected[0], kind="stable")[:3].tolist()
    assert order[1].tolist() == np.argsort(expected[1], kind="stable")[:3].tolist()


def test_the_cache_is_reused_and_invalidated(tmp_path):
    calls = []

    def extract(paths, cameras):
        calls.append(list(paths))
        return np.ones((len(paths), 3), np.float32) * len(calls), list(paths)

    key = {"weights_sha256": "a", "size": [8, 4]}
    first = gallery_features(extract, ["x.jpg", "y.jpg"], None, key, tmp_path)
    again = gallery_features(extract, ["x.jpg", "y.jpg"], None, key, tmp_path)
    assert (first[2], again[2], len(calls)) == (False, True, 1) and np.array_equal(first[0], again[0])
    assert gallery_features(extract, ["x.jpg", "y.jpg"], None, {**key, "weights_sha256": "b"}, tmp_path)[2] is False
    assert gallery_features(extract, ["x.jpg"], None, {**key, "weights_sha256": "b"}, tmp_path)[2] is False
    assert gallery_features(extract, ["x.jpg"], [0], {**key, "weights_sha256": "b"}, tmp_path)[2] is False
    assert len(calls) == 4


def _checkpoint(path, seed):
    torch.manual_seed(seed)
    model = MODELS.get("lfem_vit_tiny")(num_classes=4)
    cfg = load_config(None, ["model.name", "lfem_vit_tiny", "use_gpu", "False"])
    torch.save({"state_dict": model.state_dict(), "epoch": 1, "config": cfg.dump()}, path)


def _images(folder, names, seed):
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (64, 32, 3), dtype=np.uint8)).save(folder / name)


def test_search_writes_ranked_lists_pictures_and_reuses_the_gallery(tmp_path, capsys, caplog):
    _checkpoint(tmp_path / "a.pth", 0)
    _images(tmp_path / "query", ["0001_c1_a.jpg", "0002_c1_b.jpg"], 1)
    _images(tmp_path / "gallery", [f"{i:04d}_c2_g.jpg" for i in range(6)], 2)
    args = ["search", "--weights", str(tmp_path / "a.pth"), "--query", str(tmp_path / "query"), "--gallery",
            str(tmp_path / "gallery"), "--top-k", "3", "--device", "cpu", "--out", str(tmp_path / "out"),
            "--cameras", "from-name"]
    assert main(args) == 0
    assert "extracted and cached" in capsys.readouterr().out
    rows = list(csv.DictReader(open(tmp_path / "out" / "results.csv")))
    assert len(rows) == 6 and [r["rank"] for r in rows[:3]] == ["1", "2", "3"]
    distances = [float(r["distance"]) for r in rows[:3]]
    assert distances == sorted(distances)
    ranked = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(ranked) == {str(tmp_path / "query" / n) for n in ("0001_c1_a.jpg", "0002_c1_b.jpg")}
    pictures = sorted(p.name for p in (tmp_path / "out" / "ranked").iterdir())
    assert pictures == ["000_0001_c1_a.png", "001_0002_c1_b.png"]
    assert Image.open(tmp_path / "out" / "ranked" / pictures[0]).size[0] > 4 * 64  # query + 3 results
    assert main(args) == 0
    assert "from the cache" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == ranked  # same ranking from the cache
    _checkpoint(tmp_path / "a.pth", 1)  # another checkpoint at the same path: extracted again
    assert main(args) == 0
    assert "extracted and cached" in capsys.readouterr().out
    assert (tmp_path / "out" / CACHE_NAME).is_file()


@pytest.mark.parametrize("flag, value, message", [("--top-k", "0", "--top-k is 0"),
                                                   ("--query", "missing", "neither a folder")])
def test_search_errors(tmp_path, capsys, flag, value, message):
    _checkpoint(tmp_path / "a.pth", 0)
    _images(tmp_path / "g", ["0001_c1_x.jpg"], 0)
    args = {"--weights": str(tmp_path / "a.pth"), "--query": str(tmp_path / "g"), "--gallery": str(tmp_path / "g"),
            "--out": str(tmp_path / "out"), flag: value}
    assert main(["search", *[x for kv in args.items() for x in kv]]) == 2
    assert message in capsys.readouterr().err


def test_search_skips_or_names_bad_images(tmp_path, capsys):
    _checkpoint(tmp_path / "a.pth", 0)
    _images(tmp_path / "g", ["0001_c1_x.jpg", "0002_c1_y.jpg"], 0)
    (tmp_path / "g" / "0003_c1_bad.jpg").write_bytes(b"not an image")
    base = ["search", "--weights", str(tmp_path / "a.pth"), "--query", str(tmp_path / "g"), "--gallery",
            str(tmp_path / "g"), "--device", "cpu", "--out", str(tmp_path / "out")]
    assert main(base) == 2
    assert "0003_c1_bad.jpg" in capsys.readouterr().err
    assert main(base + ["--skip-bad-images"]) == 0
    assert len(list(csv.DictReader(open(tmp_path / "out" / "results.csv")))) == 4  # 2 queries x 2 gallery
