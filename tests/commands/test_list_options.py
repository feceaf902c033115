"""Issue 38 case 9: options taking a list (``-s``, ``-t``, ``compare --models/--seeds``) stop at the first config key,
so the ``KEY VALUE`` overrides after them stay overrides."""
from __future__ import annotations

import pytest

from lfem_plugin.cli import build_parser, main
from lfem_plugin.commands.train import config_from_args


def _config(*argv: str):
    return config_from_args(build_parser().parse_args(["train", "--model", "lfem_vit_tiny", *argv]))


def test_overrides_after_a_source_list_are_overrides_not_datasets():
    cfg = _config("-s", "market_layout", "data.market_layout.folder", "faces_a", "train.max_epoch", "3")
    assert list(cfg.data.sources) == ["market_layout"]
    assert cfg.data.market_layout.folder == "faces_a" and cfg.train.max_epoch == 3


def test_both_lists_give_back_their_overrides_and_keep_their_names():
    cfg = _config("-s", "a", "b", "train.max_epoch", "4", "-t", "c", "use_gpu", "False", "test.batch_size", "16")
    assert list(cfg.data.sources) == ["a", "b"] and list(cfg.data.targets) == ["c"]
    assert (cfg.train.max_epoch, cfg.use_gpu, cfg.test.batch_size) == (4, False, 16)


def test_a_double_dash_still_ends_the_list():
    cfg = _config("-t", "orl_faces", "--", "train.max_epoch", "3")
    assert list(cfg.data.targets) == ["orl_faces"] and cfg.train.max_epoch == 3


def test_a_misspelt_key_after_a_list_is_named_as_a_key_not_as_a_dataset():
    with pytest.raises(KeyError, match=r"data\.market_layout\.foldr \(did you mean data\.market_layout\.folder"):
        _config("-s", "market_layout", "data.market_layout.foldr", "x")


def test_compare_seeds_and_models_stop_at_the_overrides(monkeypatch, tmp_path):
    from lfem_plugin.tools import compare
    seen = {}

    def fake_run(profile, models, seeds, out, root, opts, *rest):
        seen.update(models=models, seeds=seeds, opts=opts)
        return []
    monkeypatch.setattr(compare, "run_compare", fake_run)
    monkeypatch.setattr(compare, "report", lambda out: out / "table.md")
    monkeypatch.setattr(compare, "summary_text", lambda results: "")
    assert main(["compare", "--out", str(tmp_path), "--models", "lfem_vit_tiny", "--seeds", "0", "1",
                 "train.max_epoch", "2"]) == 0
    assert seen == {"models": ["lfem_vit_tiny"], "seeds": [0, 1], "opts": ["train.max_epoch", "2"]}


def test_compare_seeds_must_be_integers(capsys, tmp_path):
    assert main(["compare", "--out", str(tmp_path), "--seeds", "zero"]) == 2
    assert "seeds are integers" in capsys.readouterr().err
