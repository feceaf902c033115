"""Issue 38 case 6: resuming on changed training data (identities added, or swapped with the count kept) is refused in
plain words pointing to ``model.load_weights``; a checkpoint without a fingerprint resumes with a warning."""
from __future__ import annotations

import logging

import pytest
import torch

from lfem_plugin import config as C
from lfem_plugin.data.fingerprint import fingerprint_change, train_fingerprint
from lfem_plugin.tools import train as T
from lfem_plugin.utils.checkpoint import load_checkpoint

from ..helpers import CPU_CONFIG, SMALL


def _cfg(root, out, epochs):
    return C.load_config(CPU_CONFIG, ["data.root", str(root), "data.save_dir", str(out), "train.max_epoch",
                                      str(epochs), *SMALL])


def _first_epoch(root, out):
    T.run(_cfg(root, out, 1))
    return out / "model" / "model.pth.tar-1"


def test_the_fingerprint_sees_paths_labels_and_moves(tmp_path):
    items = [("/d/x/train/a.jpg", 0, 0), ("/d/x/train/b.jpg", 1, 1)]
    moved = [("/e/y/train/a.jpg", 0, 0), ("/e/y/train/b.jpg", 1, 1)]
    swapped = [("/d/x/train/a.jpg", 1, 0), ("/d/x/train/b.jpg", 0, 1)]
    assert train_fingerprint(items) == train_fingerprint(moved)  # another data.root: the same set
    assert train_fingerprint(items)["images"] == 2 and train_fingerprint(items)["identities"] == 2
    assert fingerprint_change(train_fingerprint(items), train_fingerprint(swapped)).startswith("the same counts")
    assert fingerprint_change(train_fingerprint(items), train_fingerprint(items[:1])) == \
        "2 images then, 1 now; 2 identities then, 1 now; 2 cameras then, 1 now"


def test_resuming_after_identities_were_added_is_refused(synthetic_root, tmp_path):
    ckpt = _first_epoch(synthetic_root, tmp_path / "run")
    train = synthetic_root / "synthetic_reid" / "train"
    for i, src in enumerate(sorted(train.glob("0000_*"))):  # a new identity 0099
        src.with_name(f"0099_c{1 + i % 2}_f{i:07d}.jpg").write_bytes(src.read_bytes())
    with pytest.raises(ValueError, match=r"the training data changed since .*model.pth.tar-1 was written \(24 images "
                                         r"then, 28 now; 6 identities then, 7 now\).*model.load_weights"):
        T.run(_cfg(synthetic_root, tmp_path / "run", 2), resume=str(ckpt))


def test_resuming_after_identities_were_swapped_is_refused(synthetic_root, tmp_path):  # images of 0 and 1 swapped
    ckpt = _first_epoch(synthetic_root, tmp_path / "run")
    train = synthetic_root / "synthetic_reid" / "train"
    for src in sorted(train.glob("0000_*")):
        src.rename(src.with_name("tmp" + src.name[4:]))
    for src in sorted(train.glob("0001_*")):
        src.rename(src.with_name("0000" + src.name[4:]))
    for src in sorted(train.glob("tmp*")):
        src.rename(src.with_name("0001" + src.name[3:]))
    with pytest.raises(ValueError, match="the same counts, but other images or labels"):
        T.run(_cfg(synthetic_root, tmp_path / "run", 2), resume=str(ckpt))


def test_resuming_after_an_identity_was_replaced_is_refused(synthetic_root, tmp_path):  # same count, other person
    ckpt = _first_epoch(synthetic_root, tmp_path / "run")
    for src in sorted((synthetic_root / "synthetic_reid" / "train").glob("0002_*")):
        src.rename(src.with_name("0077" + src.name[4:]))
    with pytest.raises(ValueError, match="the same counts, but other images or labels"):
        T.run(_cfg(synthetic_root, tmp_path / "run", 2), resume=str(ckpt))


def test_a_checkpoint_without_a_fingerprint_resumes_with_a_warning(synthetic_root, tmp_path, caplog):
    ckpt = _first_epoch(synthetic_root, tmp_path / "run")
    state = load_checkpoint(ckpt)
    assert state["train_fingerprint"]["identities"] == 6
    del state["train_fingerprint"]
    torch.save(state, ckpt)
    with caplog.at_level(logging.WARNING):
        T.run(_cfg(synthetic_root, tmp_path / "run", 2), resume=str(ckpt))
    assert "holds no fingerprint of its training data" in caplog.text
    assert load_checkpoint(tmp_path / "run" / "model" / "model.pth.tar-2")["epoch"] == 2
