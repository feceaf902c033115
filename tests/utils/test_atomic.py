"""Every file the product writes is whole or absent: a full disk leaves no truncated file and names the path
(issue 38, case 7: ``utils/atomic.py``)."""
from __future__ import annotations

import csv
import errno

import numpy as np
import pytest
from PIL import Image

from lfem_plugin.cli import main
from lfem_plugin.tools import search, visualize
from lfem_plugin.utils.atomic import DiskFullError, atomic_path, save_npy, write_text

from ..tools.test_search import _checkpoint, _images


def _full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _half_then_full(target):
    """A writer that gets some bytes onto ``target`` (a path or a handle) before the disk fills."""
    if hasattr(target, "write"):
        target.write(b"\x93NUMPY half" if "b" in getattr(target, "mode", "b") else "half")
    else:
        with open(target, "wb") as handle:
            handle.write(b"half")
    _full()


def _leftovers(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def test_atomic_path_renames_on_success_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "report.json"
    write_text(target, "old\n")
    with pytest.raises(DiskFullError) as err:
        with atomic_path(target) as tmp:
            tmp.write_text("new, half")
            _full()
    assert f"no space to write file {target}: it needs about 0 MiB (9 bytes)" in str(err.value)
    assert target.read_text() == "old\n" and _leftovers(tmp_path) == ["report.json"]
    with pytest.raises(ValueError):  # any other error: the same clean-up, the error unchanged
        with atomic_path(target) as tmp:
            tmp.write_text("x")
            raise ValueError("boom")
    assert _leftovers(tmp_path) == ["report.json"]


def test_a_full_disk_is_seen_before_writing_when_the_size_is_known(tmp_path, monkeypatch):
    import shutil
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(100, 100, 10))
    with pytest.raises(DiskFullError, match=r"features .*f\.npy: it needs about 0 MiB \(528 bytes\) and 0 MiB "
                                            r"\(10 bytes\) are free"):
        save_npy(tmp_path / "f.npy", np.zeros((10, 10), dtype=np.float32))
    assert _leftovers(tmp_path) == []


def test_extract_on_a_full_disk_leaves_no_truncated_npy_and_names_it(tmp_path, monkeypatch, capsys):
    _checkpoint(tmp_path / "a.pth", 0)
    _images(tmp_path / "q", ["x.png", "y.png"], 0)
    monkeypatch.setattr(np, "save", lambda file, arr, *a, **k: _half_then_full(file))
    out = tmp_path / "out" / "f.npy"
    assert main(["extract", "--weights", str(tmp_path / "a.pth"), "--images", str(tmp_path / "q"), "--out",
                 str(out)]) == 2
    err = capsys.readouterr().err
    assert f"no space to write features {out}: it needs about" in err, err
    assert _leftovers(tmp_path / "out") == []


def test_search_results_on_a_full_disk_leave_no_truncated_table(tmp_path, monkeypatch):
    class FullWriter:
        def __init__(self, handle):
            self.handle = handle

        def writerow(self, row):
            self.handle.write("query,rank")
            _full()

    monkeypatch.setattr(csv, "writer", FullWriter)
    order, dist = np.array([[0]]), np.array([[0.5]])
    with pytest.raises(DiskFullError, match=f"no space to write search results {tmp_path / 'results.csv'}"):
        search.write_results(tmp_path, ["q.jpg"], ["g.jpg"], order, dist)
    assert _leftovers(tmp_path) == []


def test_pictures_on_a_full_disk_leave_no_truncated_png(tmp_path, monkeypatch):
    _images(tmp_path / "img", ["q.png", "g.png"], 0)
    monkeypatch.setattr(Image.Image, "save", lambda self, fp, *a, **k: _half_then_full(fp))
    out = tmp_path / "ranked" / "000_q.png"
    with pytest.raises(DiskFullError, match=f"ranked-list picture {out}"):
        search.draw_ranked(str(tmp_path / "img" / "q.png"), [str(tmp_path / "img" / "g.png")], [0.1], out)
    assert _leftovers(tmp_path / "ranked") == []
    from matplotlib.figure import Figure
    monkeypatch.setattr(Figure, "savefig", lambda self, fname, *a, **k: _half_then_full(fname))
    with pytest.raises(DiskFullError, match=f"picture {tmp_path / 'cmc.png'}"):
        visualize.plot_cmc({"a": [0.5, 1.0]}, tmp_path / "cmc.png")
    assert not (tmp_path / "cmc.png").exists() and not list(tmp_path.glob(".cmc*"))


def test_a_val_split_on_a_full_disk_names_the_folder_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    from lfem_plugin.data import prepare_val_split

    from ..data.test_market_layout import write_market_folder
    src = write_market_folder(tmp_path / "mine")
    monkeypatch.setattr(prepare_val_split, "_place", lambda src, dst: _half_then_full(dst))
    assert main(["prepare", "val-split", "--source", str(src), "--out", str(tmp_path / "val"), "--ids", "1"]) == 2
    assert f"no space to write validation split {tmp_path / 'val'}" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_a_tracker_export_on_a_full_disk_leaves_no_truncated_file(tmp_path, monkeypatch):
    import torch

    from lfem_plugin.registry import MODELS
    from lfem_plugin.tools.tracker_export import export_for_tracker
    monkeypatch.setattr(torch.jit, "save", lambda module, f, *a, **k: _half_then_full(f))
    model = MODELS.get("lfem_vit_tiny")(num_classes=4, img_size=(64, 32)).eval()
    out = tmp_path / "reid.torchscript"
    with pytest.raises(DiskFullError, match=f"tracker export {out}"):
        export_for_tracker(model, out, 64, 32, [0.5] * 3, [0.5] * 3, "boxmot", fmt="torchscript")
    assert _leftovers(tmp_path) == []
