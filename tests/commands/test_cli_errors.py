"""Every user mistake ends in ``lfem-reid <command>: error: ...`` with exit code 2 and no traceback."""
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lfem_plugin import config as C
from lfem_plugin.tools import train as T
from lfem_plugin.cli import main

from ..helpers import register_synthetic, write_synthetic_reid

REPO = Path(__file__).resolve().parents[2]
CPU_CONFIG = REPO / "configs" / "orl" / "lfem_vit_tiny_64x32_cpu.yaml"
SMALL = ["data.sources", "['synthetic_reid']", "data.targets", "['synthetic_reid']", "train.batch_size", "8",
         "sampler.num_instances", "2", "test.batch_size", "8", "use_gpu", "False", "test.eval_freq", "-1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    write_synthetic_reid(base / "data")
    register_synthetic()
    T.run(C.load_config(CPU_CONFIG, ["data.root", str(base / "data"), "data.save_dir", str(base / "run"),
                                     "train.max_epoch", "1", *SMALL]))
    return base, base / "run" / "model" / "model.pth.tar-1"


def _error(capsys, argv, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lfem-reid {argv[0]}: error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def _write(path, text):
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, fragments", [
    ("train: [1\n", ["is not valid YAML", "line"]),
    ("- a\n- b\n", ["must hold a mapping", "not a list"]),
    ("train:\n  lr: null\n", ["without a value", "train.lr"]),
    ("train:\n  max_epoch: -2\n", ["train.max_epoch is -2"]),
])
def test_config_file_mistakes(tmp_path, capsys, text, fragments):
    _error(capsys, ["train", "--config-file", _write(tmp_path / "c.yaml", text), "use_gpu", "False"], *fragments)


def test_base_loop(tmp_path, capsys):
    _write(tmp_path / "b.yaml", "_BASE_: a.yaml\n")
    _error(capsys, ["train", "--config-file", _write(tmp_path / "a.yaml", "_BASE_: b.yaml\n")], "_BASE_ loop",
           "a.yaml -> ", "b.yaml -> ")


def test_bad_override_is_blamed_on_the_overrides_not_the_file(capsys):
    err = _error(capsys, ["train", "--config-file", str(CPU_CONFIG), "train.max_epochs", "3"], "KEY VALUE overrides",
                 "train.max_epochs")
    assert str(CPU_CONFIG) not in err


def test_flags_after_the_overrides(capsys):
    _error(capsys, ["train", "--config-file", str(CPU_CONFIG), "train.max_epoch", "3", "--resume", "auto"],
           "--resume comes after the KEY VALUE overrides", "before the first KEY VALUE pair")


def test_more_identities_per_batch_than_exist(trained, capsys):
    base, _ = trained
    _error(capsys, ["train", "--config-file", str(CPU_CONFIG), "--root", str(base / "data"), "data.save_dir",
                    str(base / "x"), *SMALL, "train.batch_size", "40"], "20 identities per batch", "has 6")


def test_weights_folder_or_empty_file(trained, tmp_path, capsys):
    base, ckpt = trained
    _error(capsys, ["extract", "--weights", str(ckpt.parent), "--images", str(base)], "is a folder",
           "model.pth.tar-1")
    (tmp_path / "empty.pth").touch()
    _error(capsys, ["test", "--config-file", str(CPU_CONFIG), "--weights", str(tmp_path / "empty.pth")], "is empty")


def test_corrupt_or_truncated_zip_in_prepare(tmp_path, capsys):
    lists = tmp_path / "lists"
    lists.mkdir()
    for split in ("train", "query", "gallery"):
        (lists / f"{split}.list").write_text("0001_c1_f0000001.jpg\n")
    (tmp_path / "junk.zip").write_bytes(b"PK\x03\x04 not really a zip")
    _error(capsys, ["prepare", "occluded-duke", "--duke-zip", str(tmp_path / "junk.zip"), "--root",
                    str(tmp_path / "root"), "--lists", str(lists)], "junk.zip is not a complete zip archive")
    with zipfile.ZipFile(tmp_path / "full.zip", "w") as archive:
        archive.writestr("DukeMTMC-reID/bounding_box_train/0001_c1_f0000001.jpg", b"x" * 5000)
    (tmp_path / "cut.zip").write_bytes((tmp_path / "full.zip").read_bytes()[:3000])
    _error(capsys, ["prepare", "occluded-duke", "--duke-zip", str(tmp_path / "cut.zip"), "--root",
                    str(tmp_path / "root"), "--lists", str(lists)], "cut.zip is not a complete zip archive")
    assert not (tmp_path / "root" / "Occluded_Duke").exists()


def test_bad_training_image_in_a_loader_worker_is_one_line(tmp_path, capsys):
    write_synthetic_reid(tmp_path / "data")
    register_synthetic()
    bad = sorted((tmp_path / "data" / "synthetic_reid" / "train").glob("*.jpg"))[0]
    bad.write_bytes(b"garbage")
    err = _error(capsys, ["train", "--config-file", str(CPU_CONFIG), "--root", str(tmp_path / "data"),
                          "data.save_dir", str(tmp_path / "run"), *SMALL, "train.max_epoch", "1", "data.workers",
                          "1"], bad.name, "data.skip_bad_images True")
    assert "Original Traceback" not in err and len(err.strip().splitlines()) == 1


def test_extract_batch_size_and_out_suffix(trained, tmp_path, capsys):
    base, ckpt = trained
    query = str(base / "data" / "synthetic_reid" / "query")
    _error(capsys, ["extract", "--weights", str(ckpt), "--images", query, "--batch-size", "0"],
           "--batch-size is 0")
    assert main(["extract", "--weights", str(ckpt), "--images", query, "--out", str(tmp_path / "sub" / "feats")]) == 0
    assert f"-> {tmp_path / 'sub' / 'feats.npy'} " in capsys.readouterr().out
    assert np.load(tmp_path / "sub" / "feats.npy").shape[0] == 4


def test_export_creates_its_folder_and_fails_early_on_an_unwritable_path(trained, tmp_path, capsys):
    _, ckpt = trained
    assert main(["export", "onnx", "--weights", str(ckpt), "--out", str(tmp_path / "new" / "m.onnx")]) == 0
    assert (tmp_path / "new" / "m.onnx").is_file()
    capsys.readouterr()
    (tmp_path / "file").write_text("x")
    err = _error(capsys, ["export", "onnx", "--weights", str(ckpt), "--out", str(tmp_path / "file" / "m.onnx")],
                 "cannot create the folder")
    assert "TorchScript" not in err


def test_visualize_limit_and_same_stems(trained, tmp_path, capsys):
    base, ckpt = trained
    _error(capsys, ["visualize", "--weights", str(ckpt), "--images", str(base), "--limit", "0"], "--limit is 0")
    for folder in ("a", "b"):
        (tmp_path / "imgs" / folder).mkdir(parents=True)
        Image.new("RGB", (16, 32), (10, 200, 30)).save(tmp_path / "imgs" / folder / "same.jpg")
    assert main(["visualize", "--weights", str(ckpt), "--images", str(tmp_path / "imgs"), "--out",
                 str(tmp_path / "out")]) == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 2


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_shows_the_traceback_and_still_exits_2(tmp_path, capsys, where):
    config = _write(tmp_path / "c.yaml", "- a\n")
    argv = ["-v", "train", "--config-file", config] if where == "before" else ["train", "-v", "--config-file", config]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ValueError" in err
    assert err.rstrip().splitlines()[-1].startswith("lfem-reid train: error: ")
