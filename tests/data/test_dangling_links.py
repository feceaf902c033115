"""Image files that are dangling symbolic links are refused with their count, or dropped with a warning under
``data.skip_bad_images``, never dropped silently (issue 38, case 8: ``data/datasets.py``, ``data/io.py``)."""
from __future__ import annotations

import logging
import os

import pytest

from lfem_plugin.data.datasets import skipping_bad_images
from lfem_plugin.data.io import BadImageError, read_image
from lfem_plugin.data.market_layout import scan_market_split
from lfem_plugin.data.occluded_benchmarks import scan_split

from ..tools.test_search import _images


def _gallery_with_dangling_links(folder, broken=2):
    _images(folder, [f"{i:04d}_c2_g.jpg" for i in range(4)], 0)
    for i in range(broken):
        os.symlink(folder.parent / "gone" / f"{i}.jpg", folder / f"{10 + i:04d}_c2_gone.jpg")


def test_market_split_refuses_dangling_links_with_their_count(tmp_path):
    _gallery_with_dangling_links(tmp_path / "gallery")
    with pytest.raises(BadImageError) as err:
        scan_market_split(tmp_path / "gallery")
    text = str(err.value)
    assert text.startswith(f"{tmp_path / 'gallery'}: 2 of 6 image files are symbolic links whose targets are gone")
    assert "0010_c2_gone.jpg -> " in text and "data.skip_bad_images True" in text


def test_market_split_drops_them_with_a_warning_when_skipping(tmp_path, caplog):
    _gallery_with_dangling_links(tmp_path / "gallery")
    with skipping_bad_images(), caplog.at_level(logging.WARNING):
        items = scan_market_split(tmp_path / "gallery")
    assert [pid for _, pid, _ in items] == [0, 1, 2, 3]
    assert "2 of 6 image files are symbolic links whose targets are gone" in caplog.text


def test_occluded_benchmark_split_refuses_dangling_links(tmp_path):
    _gallery_with_dangling_links(tmp_path / "gallery", broken=1)
    with pytest.raises(BadImageError, match="1 of 5 image files are symbolic links"):
        scan_split(tmp_path / "gallery", camera=1)


def test_read_image_names_a_dangling_link(tmp_path):
    os.symlink(tmp_path / "nowhere.jpg", tmp_path / "a.jpg")
    with pytest.raises(BadImageError, match=r"a\.jpg: cannot read image \(a symbolic link to .*nowhere\.jpg, which "
                                            r"does not exist\)"):
        read_image(str(tmp_path / "a.jpg"))
