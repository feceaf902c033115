"""market_layout / market_layout_occluded on generated Market-layout folders (never real images): the layout, junk
ids, relabelling, the query-folder keys, the test-only case, errors on missing or misnamed folders, torchreid's
ImageDataManager as source and target, and the SIE rule for the occluded queries."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lfem_plugin  # noqa: F401  (registers the datasets)
from lfem_plugin import _torchreid
from lfem_plugin.config import load_config, market_layout_kwargs, sie_mode
from lfem_plugin.data.market_layout import (MarketLayout, MarketLayoutOccluded, current_options,
                                            market_layout_options)

TR = _torchreid.root()

# split folder -> file names (identity, camera): junk -1 and distractor 0000 included
NAMES = {
    "bounding_box_train": ["0007_c1_0001.jpg", "0007_c2_0002.jpg", "0003_c1_0003.jpg", "0003_c2_0004.jpg",
                           "0042_c3_0005.jpg", "0042_c1_0006.jpg", "-1_c1_0007.jpg"],
    "query": ["0100_c1_0010.jpg", "0101_c1_0011.jpg"],
    "bounding_box_test": ["0100_c2_0020.jpg", "0101_c2_0021.jpg", "0101_c3_0022.jpg", "0000_c2_0023.jpg",
                          "-1_c2_0024.jpg"],
    "query_occluded": ["0100_c1_0010.jpg", "0101_c1_0011.jpg"],
}


def write_market_folder(base: Path, splits=tuple(NAMES), size=(16, 8)) -> Path:
    """A Market-layout folder of tiny generated images (colour from the identity)."""
    for split in splits:
        (base / split).mkdir(parents=True, exist_ok=True)
        for name in NAMES[split]:
            pid = abs(int(name.split("_")[0]))
            pixels = np.full((*size, 3), (pid * 37) % 256, dtype=np.uint8)
            Image.fromarray(pixels).save(base / split / name)
    return base


def _names(items):
    return [(Path(p).name, pid, cam) for p, pid, cam, *_ in items]


def test_layout_junk_distractors_relabelling_and_cameras(tmp_path):
    write_market_folder(tmp_path / "mine")
    with market_layout_options(folder="mine"):
        ds = MarketLayout(root=str(tmp_path), verbose=False)
    # train: junk (-1) dropped, ids 3, 7, 42 relabelled 0, 1, 2 in sorted order; camera = C - 1
    assert _names(ds.train) == [("0003_c1_0003.jpg", 0, 0), ("0003_c2_0004.jpg", 0, 1), ("0007_c1_0001.jpg", 1, 0),
                                ("0007_c2_0002.jpg", 1, 1), ("0042_c1_0006.jpg", 2, 0), ("0042_c3_0005.jpg", 2, 2)]
    assert ds.num_train_pids == 3 and ds.num_train_cams == 3
    assert _names(ds.query) == [("0100_c1_0010.jpg", 100, 0), ("0101_c1_0011.jpg", 101, 0)]
    # gallery keeps raw ids and the 0000 distractor (as torchreid's Market1501), drops junk
    assert _names(ds.gallery) == [("0000_c2_0023.jpg", 0, 1), ("0100_c2_0020.jpg", 100, 1),
                                  ("0101_c2_0021.jpg", 101, 1), ("0101_c3_0022.jpg", 101, 2)]
    assert MarketLayout._junk_pids == [0, -1]


def test_query_folder_keys_and_options_restored(tmp_path):
    write_market_folder(tmp_path / "mine")
    with market_layout_options(folder=str(tmp_path / "mine"), query="query_occluded"):  # absolute folder
        ds = MarketLayout(root="/nonexistent", verbose=False)
        occluded = MarketLayoutOccluded(root="/nonexistent", verbose=False)
    assert {Path(p).parent.name for p, *_ in ds.query} == {"query_occluded"}
    assert {Path(p).parent.name for p, *_ in occluded.query} == {"query_occluded"}
    with market_layout_options(folder="mine"):
        assert {Path(p).parent.name for p, *_ in MarketLayout(root=str(tmp_path), verbose=False).query} == {"query"}
    assert current_options().folder == "market_layout" and current_options().query == "query"


def test_config_keys_reach_the_options(tmp_path):
    cfg = load_config(None, ["data.market_layout.folder", "x/y", "data.market_layout.query", "query_occluded"])
    assert market_layout_kwargs(cfg) == dict(folder="x/y", query="query_occluded", occluded_query="query_occluded")
    with market_layout_options(**market_layout_kwargs(cfg)) as options:
        assert options.folder == "x/y" and options.query == "query_occluded"


def test_missing_folder_names_both_keys(tmp_path):
    with market_layout_options(folder="absent"), pytest.raises(FileNotFoundError) as err:
        MarketLayout(root=str(tmp_path), verbose=False)
    assert str(tmp_path / "absent") in str(err.value) and "data.market_layout.folder 'absent'" in str(err.value)


def test_misnamed_gallery_folder_says_what_was_found(tmp_path):
    base = write_market_folder(tmp_path / "mine")
    (base / "bounding_box_test").rename(base / "gallery")
    with market_layout_options(folder="mine"), pytest.raises(FileNotFoundError) as err:
        MarketLayout(root=str(tmp_path), verbose=False)
    message = str(err.value)
    assert str(base) in message and "gallery/" in message and "bounding_box_test (gallery)" in message


def test_misnamed_query_key_says_what_was_found(tmp_path):
    write_market_folder(tmp_path / "mine")
    with market_layout_options(folder="mine", query="query_occl"), pytest.raises(FileNotFoundError) as err:
        MarketLayout(root=str(tmp_path), verbose=False)
    assert "query_occl (query)" in str(err.value) and "query_occluded/" in str(err.value)


def test_misnamed_file_is_named(tmp_path):
    base = write_market_folder(tmp_path / "mine")
    Image.new("RGB", (8, 16)).save(base / "query" / "person7.jpg")
    with market_layout_options(folder="mine"), pytest.raises(ValueError, match="person7.jpg.*NNNN_cC"):
        MarketLayout(root=str(tmp_path), verbose=False)


def test_empty_split_folder_is_named(tmp_path):
    base = write_market_folder(tmp_path / "mine")
    for f in (base / "query").iterdir():
        f.unlink()
    with market_layout_options(folder="mine"), pytest.raises(FileNotFoundError, match=f"{base / 'query'}"):
        MarketLayout(root=str(tmp_path), verbose=False)


def test_folder_without_training_split_is_test_only(tmp_path):
    write_market_folder(tmp_path / "mine", splits=("query", "bounding_box_test"))
    with market_layout_options(folder="mine"):
        ds = MarketLayout(root=str(tmp_path), mode="query", verbose=False)
        assert ds.train == [] and ds.num_train_pids == 0 and len(ds.query) == 2 and len(ds.gallery) == 4
        with pytest.raises(FileNotFoundError, match="no bounding_box_train/.*test-only target"):
            MarketLayout(root=str(tmp_path), mode="train", verbose=False)


def _manager(root, sources, targets):
    return TR.data.ImageDataManager(root=str(root), sources=sources, targets=targets, height=16, width=8,
                                    workers=0, batch_size_train=4, num_instances=2,
                                    train_sampler="RandomIdentitySampler", use_gpu=False)


def test_torchreid_datamanager_source_and_both_query_sets_as_targets(tmp_path):
    write_market_folder(tmp_path / "mine")
    with market_layout_options(folder="mine"):
        dm = _manager(tmp_path, ["market_layout"], ["market_layout", "market_layout_occluded"])
    assert dm.num_train_pids == 3 and dm.num_train_cams == 3
    assert set(dm.test_loader) == {"market_layout", "market_layout_occluded"}
    occluded_query = dm.test_dataset["market_layout_occluded"]["query"]
    assert {Path(item[0]).parent.name for item in occluded_query} == {"query_occluded"}
    batch = next(iter(dm.train_loader))
    assert batch["img"].shape == (4, 3, 16, 8)


def test_torchreid_datamanager_test_only_folder_as_target(tmp_path):
    write_market_folder(tmp_path / "train_here")
    write_market_folder(tmp_path / "test_here", splits=("query", "bounding_box_test"))
    # the training source is another folder: a subclass names it (torchreid's way of adding a dataset)
    class Source(MarketLayout):
        def __init__(self, root="", **kwargs):
            with market_layout_options(folder="train_here"):
                super().__init__(root=root, **kwargs)

    _torchreid.add_image_dataset("test_market_source", Source)
    with market_layout_options(folder="test_here"):
        dm = _manager(tmp_path, ["test_market_source"], ["market_layout"])
    assert dm.num_train_pids == 3
    assert len(dm.test_dataset["market_layout"]["gallery"]) == 4


def test_occluded_queries_use_the_training_cameras():
    trained_here = load_config(None, ["data.sources", "['market_layout']", "data.targets",
                                      "['market_layout', 'market_layout_occluded']"])
    assert sie_mode(trained_here, "market_layout_occluded") == "cameras"
    elsewhere = load_config(None, ["data.sources", "['orl_faces']", "data.targets", "['market_layout_occluded']"])
    assert sie_mode(elsewhere, "market_layout_occluded") == "mean"


def test_lfem_reid_train_scores_clean_and_occluded_queries(tmp_path, capsys):
    from lfem_plugin.cli import main

    from ..helpers import CPU_CONFIG
    write_market_folder(tmp_path / "mine")
    code = main(["train", "--config-file", str(CPU_CONFIG), "--root", str(tmp_path), "data.market_layout.folder",
                 "mine", "data.sources", "['market_layout']", "data.targets",
                 "['market_layout', 'market_layout_occluded']", "train.max_epoch", "1", "train.batch_size", "4",
                 "sampler.num_instances", "2", "test.batch_size", "4", "use_gpu", "False", "data.save_dir",
                 str(tmp_path / "run"), "train.checkpoint_period", "0", "lfem.warmup_epochs", "0"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("** Results **") == 2
    assert "market_layout_occluded" in out


# ---- validation split of the training identities ---------------------------------------------------------------

def test_val_split_holds_training_ids_out_as_query_and_gallery(tmp_path, capsys):
    import json

    from lfem_plugin.cli import main
    src = write_market_folder(tmp_path / "mine")
    assert main(["prepare", "val-split", "--source", str(src), "--out", str(tmp_path / "val"), "--ids", "1",
                 "--seed", "0"]) == 0
    record = json.loads((tmp_path / "val" / "val_split.json").read_text())
    held = record["held_out_ids"]
    assert len(held) == 1 and held[0] in (3, 7, 42)
    with market_layout_options(folder=str(tmp_path / "val")):
        ds = MarketLayout(root="", verbose=False)
    # no test image and no junk reaches the split; the held-out id's lowest camera is the query, the rest gallery
    assert {item[1] for item in ds.query} == {item[1] for item in ds.gallery} == set(held)
    assert len({item[2] for item in ds.query}) == 1
    assert min(item[2] for item in ds.gallery) > ds.query[0][2]
    assert ds.num_train_pids == 2 and len(ds.train) + len(ds.query) + len(ds.gallery) == 6
    assert record["images"] == {"train": len(ds.train), "query": len(ds.query), "gallery": len(ds.gallery)}
    # the same seed holds out the same ids; an existing folder is not replaced silently
    assert main(["prepare", "val-split", "--source", str(src), "--out", str(tmp_path / "val"), "--ids", "1"]) == 2
    assert "exists" in capsys.readouterr().err


def test_val_split_occluded_queries_are_the_queries_with_one_box_each(tmp_path, capsys):
    """--occlude writes query_occluded/ (same names) and occlusion.json; each box covers its fraction, the pixels
    inside change (noise or another identity) and the rest stay; the same seed gives the same files."""
    import json

    from lfem_plugin.cli import main
    from lfem_plugin.data.occlusion import read_occlusion_file
    src = write_market_folder(tmp_path / "mine", size=(64, 32))
    for out in ("val", "again"):
        assert main(["prepare", "val-split", "--source", str(src), "--out", str(tmp_path / out), "--ids", "2",
                     "--occlude", "0.2", "0.5"]) == 0
    val = tmp_path / "val"
    names = sorted(p.name for p in (val / "query").iterdir())
    assert sorted(p.name for p in (val / "query_occluded").iterdir()) == names
    boxes = read_occlusion_file(val / "occlusion.json")
    assert sorted(boxes) == names
    record = json.loads((val / "val_split.json").read_text())
    assert record["occluded_queries"] == {"coverage": [0.2, 0.5], "folder": "query_occluded",
                                          "kinds": ["noise", "image"]}
    entries = json.loads((val / "occlusion.json").read_text())["queries"]
    for name in names:
        top, left, h, w = boxes[name].top_left_height_width()
        assert boxes[name].image_height_width() == (64, 32)
        assert 0.2 - 0.05 <= h * w / (64 * 32) <= 0.5 + 0.05  # rounding to whole pixels
        assert entries[name]["kind"] in ("noise", "image")
        clean = np.asarray(Image.open(val / "query" / name), dtype=float)
        occluded = np.asarray(Image.open(val / "query_occluded" / name), dtype=float)
        inside = np.zeros((64, 32), bool)
        inside[top:top + h, left:left + w] = True
        diff = np.abs(occluded - clean).mean(-1)
        assert diff[inside].mean() > 20 and diff[~inside].mean() < 4  # JPEG blurs the box edge by a few levels
        again = np.asarray(Image.open(tmp_path / "again" / "query_occluded" / name), dtype=float)
        assert np.array_equal(again, occluded)
    # the occluded queries load as market_layout_occluded over the same gallery
    with market_layout_options(folder=str(val)):
        ds = MarketLayoutOccluded(root="", verbose=False)
    assert sorted(Path(p).name for p, *_ in ds.query) == names


def test_val_split_piece_occluders_are_pieces_of_a_donor_cut_elsewhere(tmp_path, capsys):
    """--occluder-kinds piece: every occluder is a piece, recorded as such; it changes its box and nothing else."""
    import json

    from lfem_plugin.cli import main
    src = write_market_folder(tmp_path / "mine", size=(64, 32))
    assert main(["prepare", "val-split", "--source", str(src), "--out", str(tmp_path / "val"), "--ids", "2",
                 "--occlude", "0.2", "0.5", "--occluder-kinds", "piece"]) == 0
    val = tmp_path / "val"
    assert json.loads((val / "val_split.json").read_text())["occluded_queries"]["kinds"] == ["piece"]
    for name, entry in json.loads((val / "occlusion.json").read_text())["queries"].items():
        assert entry["kind"] == "piece"
        x0, y0, x1, y1 = entry["box_xyxy"]
        clean = np.asarray(Image.open(val / "query" / name), dtype=float)
        occluded = np.asarray(Image.open(val / "query_occluded" / name), dtype=float)
        outside = np.ones((64, 32), bool)
        outside[y0:y1, x0:x1] = False
        diff = np.abs(occluded - clean).mean(-1)
        assert diff[outside].mean() < 4 and diff[~outside].mean() > 20
    with pytest.raises(SystemExit) as exit_:  # argparse's own usage error: exit 2, no traceback
        main(["prepare", "val-split", "--source", str(src), "--out", str(tmp_path / "bad"), "--ids", "2",
              "--occlude", "0.2", "0.5", "--occluder-kinds", "stone"])
    assert exit_.value.code == 2 and "invalid choice: 'stone'" in capsys.readouterr().err


def test_paste_occluder_keeps_the_orl_proxy_draws_and_cuts_pieces_at_other_places():
    """The default kinds are the ORL proxy's rule draw for draw (r < 0.5: noise, else the same box of the donor);
    a piece is the donor's content from elsewhere (here a donor whose rows are constant: the box shows rows of
    the donor other than its own for some draw), and an unknown kind is refused."""
    from lfem_plugin.data.datasets import paste_occluder
    image = np.zeros((20, 10, 3), np.uint8)
    other = np.repeat(np.arange(20, dtype=np.uint8)[:, None, None] * 10, 10, 1).repeat(3, 2)
    box = (4, 2, 6, 5)
    for seed in range(20):
        ours, kind = paste_occluder(image, other, np.random.default_rng(seed), box)
        rng = np.random.default_rng(seed)
        if rng.random() < 0.5:
            expected = image.copy()
            expected[4:10, 2:7] = rng.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
            assert kind == "noise" and np.array_equal(ours, expected)
        else:
            assert kind == "image" and np.array_equal(ours[4:10, 2:7], other[4:10, 2:7])
    moved = 0
    for seed in range(10):
        ours, kind = paste_occluder(image, other, np.random.default_rng(seed), box, kinds=("piece",))
        assert kind == "piece" and not ours[:4].any() and not ours[10:].any() and not ours[:, :2].any()
        moved += not np.array_equal(ours[4:10, 2:7], other[4:10, 2:7])
    assert moved >= 8
    with pytest.raises(ValueError, match="choose among"):
        paste_occluder(image, other, np.random.default_rng(0), box, kinds=("stone",))


def test_val_split_refuses_a_coverage_outside_the_image(tmp_path, capsys):
    from lfem_plugin.cli import main
    src = write_market_folder(tmp_path / "mine")
    assert main(["prepare", "val-split", "--source", str(src), "--out", str(tmp_path / "val"), "--ids", "1",
                 "--occlude", "0.5", "1.2"]) == 2
    assert "coverage" in capsys.readouterr().err and not (tmp_path / "val").exists()


@pytest.mark.parametrize("argv, message", [
    (["--ids", "3"], "cannot hold out 3 identities"),
    (["--ids", "0"], "cannot hold out 0 identities"),
])
def test_val_split_refuses_impossible_counts(tmp_path, capsys, argv, message):
    from lfem_plugin.cli import main
    src = write_market_folder(tmp_path / "mine")
    assert main(["prepare", "val-split", "--source", str(src), "--out", str(tmp_path / "val"), *argv]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "val").exists()


def test_prepare_names_the_missing_flags(tmp_path, capsys):
    from lfem_plugin.cli import main
    assert main(["prepare", "val-split", "--out", str(tmp_path / "v")]) == 2
    assert "needs --source" in capsys.readouterr().err
    assert main(["prepare", "occluded-duke", "--root", str(tmp_path)]) == 2
    assert "needs --duke-zip" in capsys.readouterr().err
    assert main(["prepare", "val-split", "--source", str(tmp_path), "--out", str(tmp_path / "v")]) == 2
    assert "has no bounding_box_train/" in capsys.readouterr().err


def test_extract_and_search_read_cameras_from_market_names(tmp_path):
    from lfem_plugin.data.io import cameras_from_names, list_images
    base = write_market_folder(tmp_path / "mine")
    paths = list_images(str(base / "bounding_box_test"))
    assert cameras_from_names(paths) == [1, 1, 1, 1, 2]  # -1_c2, 0000_c2, 0100_c2, 0101_c2, 0101_c3 (sorted names)


def test_doctor_synthetic_sends_a_market_folder_to_the_real_data(tmp_path):
    from lfem_plugin.tools.synthetic import write_synthetic
    with pytest.raises(KeyError, match="run without --synthetic on the real data"):
        write_synthetic("market_layout", tmp_path)
