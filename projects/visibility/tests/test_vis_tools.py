"""The project's configs, profiles and commands: the visibility configs are the core's recipes plus the study's keys,
its comparison profile changes one part per row, doctor measures its model, and a bad key of its own stops compare
before any training."""
import json
from pathlib import Path

import pytest

from lfem_plugin import config as C
from lfem_plugin.cli import main
from tests.config.test_recipe import BENCHMARKS, _flat

PROJECT = Path(__file__).resolve().parents[1]
REPO = PROJECT.parents[1]


VIS_KEYS = {"model.name", "lfem.gate_supervision", "lfem.occluder", "lfem.rearrange", "lfem.gate_scope",
            "data.save_dir"}


@pytest.mark.parametrize("dataset", sorted(BENCHMARKS) + ["occluded_duke"])
def test_visibility_configs_are_the_recipe_plus_the_visibility_keys(dataset):
    paper = _flat(C.load_config(REPO / "configs" / dataset / "lfem_vit_base_s11_256x128.yaml"))
    vis = _flat(C.load_config(PROJECT / "configs" / dataset / "lfem_vit_vis_base_s11_256x128.yaml"))
    assert {k for k in paper if paper[k] != vis[k]} == VIS_KEYS
    assert (vis["model.name"], vis["lfem.gate_supervision"], vis["lfem.occluder"], vis["lfem.rearrange"],
            vis["lfem.gate_scope"]) == ("lfem_vit_vis", 1.0, "paste", False, "local")
    assert vis["data.save_dir"].endswith(f"{dataset}/lfem_vit_vis_base_s11_256x128")


def test_doctor_measures_the_visibility_aware_model(tmp_path):
    """Its batches carry visibility targets and occluder boxes beside the views: the FLOP count reads them as the
    training step does (it failed on a dict of views before)."""
    out = tmp_path / "doctor.json"
    assert main(["doctor", "--config-file", str(PROJECT / "configs" / "orl" / "lfem_vit_vis_tiny_64x32_cpu.yaml"),
                 "--synthetic", "--iters", "1", "--warmup", "0", "--eval-images", "8", "--out", str(out),
                 "data.sources", "['occluded_duke']", "data.targets", "['occluded_duke']"]) == 0
    report = json.loads(out.read_text())
    assert report["model"] == "lfem_vit_vis_tiny" and report["grads_finite"]
    assert report["train_gflops_per_image"] > 2.5 * report["eval_gflops_per_image"] > 0


def test_visibility_profile_rows_change_one_part_each_on_the_quick_recipe(tmp_path):
    from lfem_plugin.tools.compare import QUICK, _config
    from lfem_plugin.tools.protocols import PROFILES
    from lfem_visibility.protocols import VISIBILITY
    assert PROFILES["visibility"] is VISIBILITY
    cfgs = {s.key: _config(s, VISIBILITY, 0, tmp_path, "", (), None) for s in VISIBILITY.models}
    full = _config(next(s for s in QUICK.models if s.key == "full"), QUICK, 0, tmp_path, "", (), None)
    keys = ("model.name", "lfem.gate_supervision", "lfem.occluder", "lfem.rearrange", "lfem.gate_scope")

    def vis(cfg):
        return (cfg.model.name, cfg.lfem.gate_supervision, cfg.lfem.occluder, cfg.lfem.rearrange, cfg.lfem.gate_scope)

    paper = ("lfem_vit_tiny", 0.0, "noise", True, "refined")
    assert vis(cfgs["paper_full"]) == vis(full) == paper
    for key, index, value in (("plus_supervision", 1, 1.0), ("plus_paste", 2, "paste"), ("plus_stripes", 3, False),
                              ("plus_local_gate", 4, "local")):
        changed = [k for k, a, b in zip(keys, vis(cfgs[key]), paper) if a != b]
        assert changed == [keys[index]] and vis(cfgs[key])[index] == value
    assert vis(cfgs["vis_all"]) == ("lfem_vit_vis_tiny", 1.0, "paste", False, "local")
    for cfg in cfgs.values():  # the quick protocol itself is unchanged
        assert (cfg.data.height, cfg.data.width, cfg.lfem.stride, cfg.train.max_epoch, cfg.lfem.loss_weights) == \
            (full.data.height, full.data.width, full.lfem.stride, full.train.max_epoch, full.lfem.loss_weights)


@pytest.mark.parametrize("override, message", [
    (["lfem.gate_inptu", "relation_tokens"], "lfem.gate_inptu (did you mean lfem.gate_input?)"),
    (["lfem.occluder", "pastee"], "lfem.occluder 'pastee' (in the KEY VALUE overrides) is not one of"),
    (["lfem.token_supervision", "1.0"], "set lfem.gate_input to one of them"),
])
def test_a_bad_override_stops_compare_before_any_training_with_exit_2(tmp_path, capsys, override, message):
    """A wrong key or value is the same mistake for every row: not a 'failed' row per model and exit 0."""
    code = main(["compare", "--profile", "visibility", "--models", "paper_full", "vis_all_mlp", "--out",
                 str(tmp_path / "out"), *override])
    err = capsys.readouterr().err
    assert code == 2
    line = err.strip().splitlines()[-1]
    assert line.startswith("lfem-reid compare: error: row 'paper_full': ") and message in line
    assert "nothing was trained" in line and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # no JSON, no table
