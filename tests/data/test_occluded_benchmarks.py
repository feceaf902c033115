"""Occluded-REID, Partial-REID, Partial-iLIDS and P-DukeMTMC-reID on fake trees: every layout variant, the exact
benchmark counts, parsing (pid, camera, relabel), count warnings, and errors on missing or misnamed folders."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

import lfem_plugin  # noqa: F401  (registers the datasets)
from lfem_plugin import _torchreid
from lfem_plugin.data.occluded_benchmarks import (GALLERY_CAMERA, QUERY_CAMERA, TEST_ONLY, OccludedREID, PartialILIDS,
                                                  PartialREID, PDukeMTMCReID)

from ..helpers import _write, occluded_reid_tree, p_duke_tree, partial_ilids_tree, partial_reid_tree

TR = _torchreid.root()


def _split(cls, root: Path, mode: str):
    return cls(root=str(root), mode=mode, verbose=False).data


@pytest.mark.parametrize("name", ["Occluded_REID", "OccludedREID", "ICME2018_Occluded-Person-Reidentification_"
                                  "datasets/Occluded_REID"])
def test_occluded_reid_exact_benchmark(tmp_path, caplog, name):
    occluded_reid_tree(tmp_path, name=name)
    with caplog.at_level(logging.WARNING):
        query, gallery = _split(OccludedREID, tmp_path, "query"), _split(OccludedREID, tmp_path, "gallery")
    assert len(query) == len(gallery) == 1000
    assert len({q[1] for q in query}) == len({g[1] for g in gallery}) == 200
    assert {q[2] for q in query} == {QUERY_CAMERA} and {g[2] for g in gallery} == {GALLERY_CAMERA}
    path, pid, cam, dsetid = query[7]
    assert path.endswith("occluded_body_images/002/002_03.tif") and (pid, cam, dsetid) == (2, 0, 0)
    assert "identities" not in caplog.text  # the exact counts raise no warning


def test_partial_reid_layouts_and_counts(tmp_path, caplog):
    for query_folder, name in (("partial_body_images", "Partial_REID"), ("occluded_body_images", "PartialREID"),
                               ("partial_body_images", "Partial-REID_Dataset")):
        root = partial_reid_tree(tmp_path / name, query=query_folder, name=name)
        with caplog.at_level(logging.WARNING):
            query, gallery = _split(PartialREID, root, "query"), _split(PartialREID, root, "gallery")
        assert (len(query), len(gallery), len({q[1] for q in query})) == (300, 300, 60)
        assert query[0][1:3] == (1, 0) and query[0][0].endswith(f"{query_folder}/001_01.jpg")
        assert gallery[-1][1:3] == (60, 1)
    assert "identities" not in caplog.text


@pytest.mark.parametrize("folders", [("partial_body_images", "whole_body_images"), ("Probe", "Gallery")])
def test_partial_ilids_layouts(tmp_path, folders):
    partial_ilids_tree(tmp_path, folders=folders)
    query, gallery = _split(PartialILIDS, tmp_path, "query"), _split(PartialILIDS, tmp_path, "gallery")
    assert len(query) == len(gallery) == 119 and [q[1] for q in query] == list(range(1, 120))
    assert {q[2] for q in query} == {0} and {g[2] for g in gallery} == {1}


def test_nested_folder_and_case_variants(tmp_path):
    partial_ilids_tree(tmp_path / "partial_ilids", ids=3, name="PARTIAL-ILIDS")  # root/partial_ilids/PARTIAL-ILIDS
    assert len(_split(PartialILIDS, tmp_path, "query")) == 3


def test_partial_copy_warns_with_counts(tmp_path, caplog):
    occluded_reid_tree(tmp_path, ids=3, per_id=2)
    with caplog.at_level(logging.WARNING):
        query = _split(OccludedREID, tmp_path, "query")
    assert len(query) == 6
    assert "Occluded-REID query: 6 images of 3 identities, but the benchmark has 1000 images of 200" in caplog.text
    assert "gallery: 6 images of 3 identities" in caplog.text


def test_p_dukemtmc_reid_splits_relabel_and_cameras(tmp_path):
    p_duke_tree(tmp_path, name="P-DukeMTMC-reid")
    train, query, gallery = (_split(PDukeMTMCReID, tmp_path, m) for m in ("train", "query", "gallery"))
    assert len(train) == 15 and sorted({t[1] for t in train}) == [0, 1, 2]
    by_folder = {(Path(p).parts[-3], Path(p).parent.name): (pid, cam) for p, pid, cam, _ in train}
    assert by_folder[("occluded_body_images", "0005")] == (0, QUERY_CAMERA)
    assert by_folder[("whole_body_images", "0012")] == (2, GALLERY_CAMERA)  # raw 12 -> label 2 (sorted 5, 9, 12)
    assert [(q[1], q[2]) for q in query] == [(20, 0), (21, 0)]
    assert sorted({(g[1], g[2]) for g in gallery}) == [(20, 1), (21, 1)] and len(gallery) == 4
    dataset = PDukeMTMCReID(root=str(tmp_path), mode="train", verbose=False)
    assert (dataset.num_train_pids, dataset.num_train_cams) == (3, 2)


def test_missing_benchmark_names_expected_and_found(tmp_path):
    (tmp_path / "market1501").mkdir()
    with pytest.raises(FileNotFoundError) as err:
        OccludedREID(root=str(tmp_path), mode="query")
    text = str(err.value)
    assert "Occluded-REID not found under" in text and "Occluded_REID or OccludedREID" in text
    assert "occluded_body_images" in text and "market1501/" in text


def test_misnamed_query_folder_is_named(tmp_path):
    partial_reid_tree(tmp_path, ids=2, query="partial_images")
    with pytest.raises(FileNotFoundError) as err:
        PartialREID(root=str(tmp_path), mode="query")
    text = str(err.value)
    assert "holds partial_images/, whole_body_images/" in text
    assert "partial_body_images or occluded_body_images (query)" in text


def test_p_duke_without_test_folder(tmp_path):
    p_duke_tree(tmp_path)
    import shutil
    shutil.rmtree(tmp_path / "P-DukeMTMC-reID" / "test")
    with pytest.raises(FileNotFoundError, match=r"holds train/; expected test/ holding occluded_body_images"):
        PDukeMTMCReID(root=str(tmp_path), mode="train")


def test_empty_split_and_unnumbered_file(tmp_path):
    partial_ilids_tree(tmp_path, ids=2)
    for f in (tmp_path / "Partial_iLIDS" / "whole_body_images").iterdir():
        f.unlink()
    with pytest.raises(FileNotFoundError, match="no images .* in .*whole_body_images"):
        PartialILIDS(root=str(tmp_path), mode="query")
    partial_ilids_tree(tmp_path, ids=2)
    _write(tmp_path / "Partial_iLIDS" / "partial_body_images" / "person.jpg")
    with pytest.raises(ValueError, match=r"person.jpg: no identity number in 'person.jpg'"):
        PartialILIDS(root=str(tmp_path), mode="query")


@pytest.mark.parametrize("name", TEST_ONLY)
def test_test_only_benchmarks_refuse_training(tmp_path, name):
    with pytest.raises(ValueError, match=f"test-only benchmark .* list {name} in data.targets"):
        TR.data.ImageDataManager(root=str(tmp_path), sources=[name], height=16, width=8, workers=0)


def test_test_only_benchmark_as_torchreid_target(tmp_path, capsys):
    """torchreid's data manager builds the test-only set as a target; nothing of it reaches training."""
    partial_reid_tree(tmp_path, ids=4, per_id=2)
    p_duke_tree(tmp_path)
    dm = TR.data.ImageDataManager(root=str(tmp_path), sources=["p_dukemtmc_reid"],
                                  targets=["p_dukemtmc_reid", "partial_reid"], height=16, width=8, workers=0,
                                  batch_size_train=4, batch_size_test=4)
    assert dm.num_train_pids == 3
    assert len(dm.test_dataset["partial_reid"]["query"]) == 8 and len(dm.test_dataset["partial_reid"]["gallery"]) == 8
    assert "train    |     0 |        0 |         0" in capsys.readouterr().out
    batch = next(iter(dm.test_loader["partial_reid"]["gallery"]))
    assert batch["camid"].tolist() == [1, 1, 1, 1] and batch["img"].shape == (4, 3, 16, 8)


def test_unreadable_test_image_is_dropped_when_skipping(tmp_path, caplog):
    from lfem_plugin.data.datasets import skipping_bad_images
    partial_reid_tree(tmp_path, ids=3, per_id=2)
    (tmp_path / "Partial_REID" / "whole_body_images" / "002_09.jpg").write_bytes(b"not an image")
    with skipping_bad_images(), caplog.at_level(logging.WARNING):
        gallery = _split(PartialREID, tmp_path, "gallery")
    assert len(gallery) == 6 and not any(g[0].endswith("002_09.jpg") for g in gallery)
    assert "skipped 1 unreadable image(s) of 7" in caplog.text
