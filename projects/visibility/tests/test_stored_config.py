"""A config stored in a checkpoint reloads to the run that wrote it, even after keys were added since.

The fault fixed: a stored config lacking a key added later (it did not exist when the run was trained) took the
registered name's *current* setting of that key, so an ``lfem_vit_vis_tokens_tiny`` run trained before
``lfem.gate_grad`` existed (behaviour ``all``) reloaded as ``visibility``.
"""
import logging

import torch
import yaml

from lfem_plugin.config import load_config
from lfem_plugin.registry import MODELS
from lfem_plugin.tools.inference import load_trained


def _without(cfg, *keys: str) -> str:
    data = yaml.safe_load(cfg.dump())
    for key in keys:
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        del node[last]
    return yaml.safe_dump(data)


def test_a_key_the_stored_config_predates_keeps_its_default_not_the_names_current_setting(caplog):
    cfg = load_config(None, ["model.name", "lfem_vit_vis_tokens_tiny"])
    assert cfg.lfem.gate_grad == "visibility"  # the name's setting today
    with caplog.at_level(logging.INFO, logger="lfem_plugin.config.loader"):
        old = load_config(None, text=_without(cfg, "lfem.gate_grad"))
    assert old.lfem.gate_grad == "all"  # the behaviour before the key existed
    assert "lfem.gate_grad" in caplog.text and "predates" in caplog.text
    # every key the stored config holds is kept, including the name's settings of that time
    assert old.lfem.gate_input == "relation_tokens" and old.lfem.token_supervision == 1.0
    assert load_config(None, text=cfg.dump()) == cfg  # a complete stored config reloads unchanged


def test_keys_the_name_fixes_still_follow_the_name_when_absent():
    cfg = load_config(None, ["model.name", "vit_transreid_tiny"])  # fixes use_lfem false and one view
    old = load_config(None, text=_without(cfg, "lfem.use_lfem", "lfem.views"))
    assert old.lfem.use_lfem is False and list(old.lfem.views) == ["original"]


def test_overrides_still_win_over_a_stored_config(caplog):
    cfg = load_config(None, ["model.name", "lfem_vit_vis_tokens_tiny"])
    with caplog.at_level(logging.INFO, logger="lfem_plugin.config.loader"):
        old = load_config(None, ["lfem.gate_grad", "visibility"], text=_without(cfg, "lfem.gate_grad"))
    assert old.lfem.gate_grad == "visibility"
    assert "predates" not in caplog.text  # the override set it: nothing was pinned


def test_a_name_given_over_a_stored_config_fixes_its_own_keys():
    """``test --model vit_transreid_tiny`` over an old dump that lacks lfem.use_lfem: the built name fixes it."""
    cfg = load_config(None, ["model.name", "lfem_vit_tiny", "lfem.views", "['original']"])
    old = load_config(None, ["model.name", "vit_transreid_tiny"], text=_without(cfg, "lfem.use_lfem"))
    assert old.lfem.use_lfem is False  # not pinned to the default True (which would contradict the name)


def test_every_dump_holds_the_frozen_sections():
    """A whole dump is recognised by DUMP_SECTIONS; they must stay top-level keys of every dump."""
    from lfem_plugin.config.loader import DUMP_SECTIONS
    assert set(DUMP_SECTIONS) <= set(yaml.safe_load(load_config(None).dump()))


def test_load_trained_rebuilds_an_old_run_with_the_behaviour_it_was_trained_with(tmp_path):
    cfg = load_config(None, ["model.name", "lfem_vit_vis_tokens_tiny"])
    model = MODELS.get("lfem_vit_vis_tokens_tiny")(num_classes=4, loss="triplet")
    path = tmp_path / "model.pth.tar-1"
    torch.save({"state_dict": model.state_dict(), "epoch": 1, "config": _without(cfg, "lfem.gate_grad")}, path)
    _, loaded = load_trained(str(path))
    assert loaded.lfem.gate_grad == "all"


def test_a_partial_stored_text_is_read_like_a_config_file():
    """Only a whole dump pins absent keys: a hand-written stored config gets the name's settings, as a file does."""
    old = load_config(None, text="model: {name: lfem_vit_vis_tokens_tiny}\n")
    assert old == load_config(None, ["model.name", "lfem_vit_vis_tokens_tiny"])
    assert old.lfem.gate_grad == "visibility" and old.lfem.gate_scope == "local"
