import json
import subprocess
import sys
from pathlib import Path

import pytest

from lfem_plugin.tools import compare
from lfem_plugin.tools.compare import ModelSpec, Profile, report, run_compare

REPO = Path(__file__).resolve().parents[2]
TINY = ("train.max_epoch", "1", "data.height", "64", "data.width", "32", "lfem.stride", "8",
        "train.batch_size", "16", "sampler.num_instances", "4")


@pytest.mark.slow
def test_compare_two_models_writes_json_table_and_plots_and_survives_a_failure(tmp_path, monkeypatch):
    quick = compare.QUICK
    broken = ModelSpec("broken", "Broken", quick.models[0].config_file,
                       {**quick.models[0].change_map, "model.name": "no_such_model"})
    profile = Profile("quick", quick.description, quick.common, quick.models + (broken,))
    monkeypatch.setitem(compare.PROFILES, "quick", profile)
    results = run_compare("quick", ["full", "broken", "baseline_vit"], seeds=[0], out_dir=tmp_path,
                          root=str(tmp_path / "data"), extra=TINY)
    assert [r["status"] for r in results] == ["ok", "failed", "ok"]
    assert "no_such_model" in results[1]["reason"]
    full = json.loads((tmp_path / "full_seed0.json").read_text())
    for key in ("R1", "R5", "R10", "mAP", "params", "train_images_per_s", "eval_s", "epochs", "device", "versions",
                "seed", "config"):
        assert key in full
    assert full["epochs"] == 1 and 0 <= full["mAP"] <= 100
    report(tmp_path)
    table = (tmp_path / "results.md").read_text()
    assert "Full (LFEM)" in table and "Baseline (ViT)" in table and "failed" in table
    assert (tmp_path / "results.csv").read_text().startswith("model,label")
    for png in ("cmc.png", "bars.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    # resumable: finished models are not trained again
    again = run_compare("quick", ["full"], seeds=[0], out_dir=tmp_path, root=str(tmp_path / "data"), extra=TINY)
    assert again[0]["date"] == full["date"] and again[0]["R1"] == full["R1"]


def test_unknown_model_lists_choices():
    with pytest.raises(KeyError, match="choices"):
        run_compare("quick", ["nope"], out_dir="unused")


def test_hacnn_is_skipped_with_a_reason_on_cpu(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    result = run_compare("quick", ["hacnn"], seeds=[0], out_dir=tmp_path)[0]
    assert result["status"] == "skipped" and "GPU" in result["reason"]


def test_paper_profile_skips_baselines_without_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    result = run_compare("paper", ["resnet50"], seeds=[0], out_dir=tmp_path)[0]
    assert result["status"] == "skipped" and "no download" in result["reason"]


@pytest.mark.slow
@pytest.mark.parametrize("script", ["bench_eval.py", "bench_throughput.py", "bench_rerank.py"])
def test_bench_scripts_smoke(script, tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--smoke", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert list(tmp_path.glob("*.json"))


def test_quick_profile_recipes_come_from_the_shipped_configs(tmp_path):
    from lfem_plugin.tools.compare import QUICK, _config, configs_dir
    cfgs = {s.key: _config(s, QUICK, 0, tmp_path, "", (), None) for s in QUICK.models}
    assert all((configs_dir() / s.config_file).is_file() for s in QUICK.models)
    for key in ("baseline_vit", "lfem_only", "rerc_only", "full"):
        cfg = cfgs[key]
        assert (cfg.data.height, cfg.data.width, cfg.lfem.stride, cfg.train.max_epoch) == (96, 80, 16, 100)
    assert [cfgs[k].lfem.loss_weights for k in ("baseline_vit", "full")] == ["transreid", "paper"]
    assert (cfgs["baseline_vit"].model.name, cfgs["baseline_vit"].lfem.use_lfem) == ("vit_transreid_tiny", False)
    assert list(cfgs["lfem_only"].lfem.views) == ["original"] and cfgs["rerc_only"].lfem.use_lfem is False
    for key in ("resnet50", "pcb_p6", "osnet_x1_0", "hacnn"):
        cfg = cfgs[key]
        assert (cfg.model.name, cfg.loss.name, cfg.train.max_epoch) == (key, "softmax", 15)
    assert (cfgs["osnet_x1_0"].train.optim, cfgs["hacnn"].data.height) == ("amsgrad", 160)


def test_paper_profile_cnn_recipes_come_from_the_shipped_config(tmp_path):
    from lfem_plugin.tools.compare import PAPER, _config, configs_dir
    cfgs = {s.key: _config(s, PAPER, 0, tmp_path, "", (), None) for s in PAPER.models}
    for key in ("resnet50", "pcb_p6", "osnet_x1_0", "hacnn"):
        spec = next(s for s in PAPER.models if s.key == key)
        assert (configs_dir() / spec.config_file).is_file()
        cfg = cfgs[key]
        assert (cfg.model.name, cfg.loss.name, cfg.sampler.train_sampler) == (key, "softmax", "RandomSampler")
        assert list(cfg.data.norm_mean) == [0.485, 0.456, 0.406] and cfg.lfem.warmup_epochs == 0
    assert (cfgs["resnet50"].train.optim, cfgs["resnet50"].train.max_epoch, cfgs["resnet50"].train.lr) == \
        ("adam", 60, 0.0003)
    assert (cfgs["pcb_p6"].data.height, cfgs["pcb_p6"].train.optim, cfgs["pcb_p6"].train.lr) == (384, "sgd", 0.05)
    assert (cfgs["osnet_x1_0"].train.max_epoch, cfgs["osnet_x1_0"].train.batch_size) == (150, 64)
    assert (cfgs["hacnn"].data.height, cfgs["hacnn"].data.width, cfgs["hacnn"].train.max_epoch) == (160, 64, 150)


@pytest.mark.parametrize("dataset", ["occluded_duke", "market1501", "p_dukemtmc_reid", "dukemtmcreid", "msmt17"])
def test_paper_profile_runs_on_every_benchmark_from_its_configs(tmp_path, dataset):
    from lfem_plugin.tools.compare import PAPER, _config
    assert dataset in PAPER.benchmarks
    for spec in PAPER.models:
        assert PAPER.config_path(spec, dataset).parent.name == dataset
        cfg = _config(spec, PAPER, 0, tmp_path, "", (), None, dataset)
        assert list(cfg.data.sources) == [dataset] and cfg.model.name == spec.model


def test_unknown_benchmark_and_mixed_out_folder(tmp_path, monkeypatch):
    with pytest.raises(KeyError, match="--benchmark cuhk03: profile 'paper' runs on occluded_duke, market1501"):
        run_compare("paper", ["resnet50"], out_dir=tmp_path, benchmark="cuhk03")
    with pytest.raises(KeyError, match="use --profile paper --benchmark market1501"):
        run_compare("quick", ["full"], out_dir=tmp_path, benchmark="market1501")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    assert run_compare("paper", ["resnet50"], out_dir=tmp_path)[0]["benchmark"] == "occluded_duke"
    with pytest.raises(FileExistsError, match="holds a result on occluded_duke, not market1501"):
        run_compare("paper", ["resnet50"], out_dir=tmp_path, benchmark="market1501")


def test_every_row_is_a_shipped_config_plus_known_keys(tmp_path):
    from lfem_plugin.config import get_default_config
    from lfem_plugin.tools.protocols import PROFILES, configs_dir
    defaults = get_default_config()
    for profile in PROFILES.values():
        for spec in profile.models:
            assert (configs_dir() / spec.config_file).is_file(), spec.key
            for key in spec.change_map:  # dotted keys of the config, typed values: no string mini-language
                node = defaults
                for part in key.split("."):
                    node = node[part]
                assert not isinstance(spec.change_map[key], str) or isinstance(node, str), (spec.key, key)
    with pytest.raises(TypeError):
        PROFILES["quick"].models[0].change_map["lfem.use_lfem"] = True  # rows are read-only
    with pytest.raises(AttributeError):
        PROFILES["quick"].models[0].changes = ()


def test_rows_hash_and_pickle_and_keep_their_typed_changes():
    """Old code: ``changes`` was a mappingproxy, which neither hashes nor pickles (rows go to worker processes)."""
    import pickle
    spec = ModelSpec("x", "X", "orl/quick_vit_tiny_96x80.yaml", {"lfem.views": ["original"], "lfem.stride": 8})
    assert spec.changes == (("lfem.stride", 8), ("lfem.views", ("original",)))  # sorted pairs, lists as tuples
    assert dict(spec.change_map) == {"lfem.stride": 8, "lfem.views": ["original"]}  # as YAML gives them
    again = pickle.loads(pickle.dumps(spec))
    assert again == spec and hash(again) == hash(spec) and len({spec, again}) == 1
    assert ModelSpec("x", "X", spec.config_file, spec.changes) == spec  # from its stored pairs too
    rows = compare.PROFILES["quick"].models  # every shipped row
    assert pickle.loads(pickle.dumps(rows)) == rows and len(set(rows)) == len(rows)


def test_vit_weights_go_to_the_model_the_loaded_config_builds(tmp_path):
    """Old code: the row's YAML was re-read for model.name (default "lfem_vit"), so a KEY VALUE override of the model
    was missed and ImageNet ViT weights were set on a torchreid model."""
    from lfem_plugin.tools.compare import QUICK, _config
    full = next(spec for spec in QUICK.models if spec.key == "full")
    assert _config(full, QUICK, 0, tmp_path, "", (), "vit.pth").model.pretrained_path == "vit.pth"
    cnn = _config(full, QUICK, 0, tmp_path, "", ("model.name", "resnet50"), "vit.pth")
    assert (cnn.model.name, cnn.model.pretrained_path) == ("resnet50", "")
    mine = _config(full, QUICK, 0, tmp_path, "", ("model.pretrained_path", "mine.pth"), "vit.pth")
    assert mine.model.pretrained_path == "mine.pth"  # the command line's override still wins
    assert full.model == "lfem_vit_tiny" and next(s for s in QUICK.models if s.key == "resnet50").model == "resnet50"


def test_plugin_models_are_recognised_through_the_registry(tmp_path, monkeypatch):
    from lfem_plugin.tools.compare import PAPER, ModelSpec, _config, run_compare
    deit = ModelSpec("deit", "DeiT-S LFEM", "occluded_duke/lfem_vit_base_s11_256x128.yaml",
                     {"model.name": "lfem_deit_small_patch16_s16_256x128", "lfem.stride": 16})  # not lfem_vit*
    assert _config(deit, PAPER, 0, tmp_path, "", (), "vit.pth").model.pretrained_path == "vit.pth"
    monkeypatch.setitem(compare.PROFILES, "paper", Profile("paper", PAPER.description, {}, (deit,),
                                                           benchmarks=PAPER.benchmarks))
    result = run_compare("paper", ["deit"], seeds=[0], out_dir=tmp_path)[0]
    assert result["status"] == "skipped" and "--vit-weights" in result["reason"]
    assert result["registered_name"] == "lfem_deit_small_patch16_s16_256x128"


def test_pedestrians_profile_scores_clean_and_occluded_queries_one_model_per_call(tmp_path):
    from ..data.test_market_layout import write_market_folder
    write_market_folder(tmp_path / "data" / "cuhk03_pair1_128x64")  # generated, under the profile's folder name
    tiny = ("train.max_epoch", "1", "data.height", "64", "data.width", "32", "train.batch_size", "4",
            "sampler.num_instances", "2", "test.batch_size", "4", "data.workers", "0", "train.save_checkpoints",
            "False")
    for key in ("full", "osnet_x0_25"):
        [result] = run_compare("pedestrians", [key], seeds=[0], out_dir=tmp_path / "out", root=str(tmp_path / "data"),
                               extra=tiny)
        assert result["status"] == "ok", result.get("reason")
        assert set(result["targets"]) == {"market_layout", "market_layout_occluded"}
        assert result["R1"] == result["targets"]["market_layout"]["R1"]  # the first target: the clean queries
    assert json.loads((tmp_path / "out" / "full_seed0.json").read_text())["registered_name"] == "lfem_vit_tiny"
    from lfem_plugin.tools.compare import _config
    from lfem_plugin.tools.protocols import PEDESTRIANS
    for spec in PEDESTRIANS.models:  # every row's config names the model it claims and both query sets
        cfg = _config(spec, PEDESTRIANS, 0, tmp_path, str(tmp_path / "data"), (), None)
        assert cfg.model.name == spec.model
        assert list(cfg.data.targets) == ["market_layout", "market_layout_occluded"]
        assert cfg.data.market_layout.folder == "cuhk03_pair1_128x64" and cfg.data.root == str(tmp_path / "data")




def test_every_profile_is_a_cli_choice():
    from lfem_plugin.cli import build_parser
    from lfem_plugin.tools.protocols import PROFILES
    parser = build_parser()
    for name in PROFILES:
        assert parser.parse_args(["compare", "--profile", name, "--report"]).profile == name


@pytest.mark.parametrize("profile", ["quick", "pedestrians"])
def test_cpu_vit_baselines_are_transreid_as_table_2_reads_it(tmp_path, profile):
    """The CPU profiles' Baseline (ViT) = TransReID: no LFEM, one view, JPM locals, TransReID's concatenated test
    feature and loss weighting (the CUHK03 file once lost the last two keys). The paper profile keeps the paper's
    test feature on purpose (configs/occluded_duke/vit_transreid_base_s11_256x128.yaml)."""
    from lfem_plugin.tools.compare import _config
    from lfem_plugin.tools.protocols import PROFILES
    spec = next(s for s in PROFILES[profile].models if s.key == "baseline_vit")
    lfem = _config(spec, PROFILES[profile], 0, tmp_path, "", (), None).lfem
    assert (lfem.use_lfem, list(lfem.views), lfem.local_feature, lfem.eval_feature, lfem.loss_weights) == (
        False, ["original"], "jpm", "concat", "transreid")




def test_console_table_columns_line_up_with_long_labels():
    rows = [{"label": "Full", "status": "ok", "R1": 50.0, "mAP": 41.5, "wall_s": 69.0},
            {"label": "All (tokens), MLP token score, noise occluders", "status": "ok", "R1": 50.0, "mAP": 45.7,
             "wall_s": 65.0}]
    lines = compare.summary_text(rows).splitlines()
    assert len({line.index(" 50.0") for line in lines[1:]}) == 1
    assert lines[0].index("R1") + 2 == lines[1].index(" 50.0") + 5


@pytest.mark.parametrize("override, message", [
    (["lfem.strdie", "12"], "lfem.strdie (did you mean lfem.stride or lfem.share?)"),
    (["test.cross_domain_sie", "meen"], "test.cross_domain_sie 'meen' (in the KEY VALUE overrides) is not one of"),
    (["train.batch_size", "30"], "is not a multiple of sampler.num_instances"),
])
def test_a_bad_core_override_stops_compare_before_any_training_with_exit_2(tmp_path, capsys, override, message):
    """A wrong key or value is the same mistake for every row: not a 'failed' row per model and exit 0."""
    from lfem_plugin.cli import main
    code = main(["compare", "--profile", "quick", "--models", "full", "baseline_vit", "--out", str(tmp_path / "out"),
                 *override])
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert code == 2 and line.startswith("lfem-reid compare: error: row 'full': ") and message in line
    assert "nothing was trained" in line and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # no JSON, no table


def test_a_row_stopped_mid_run_resumes_from_its_checkpoint(tmp_path, monkeypatch, caplog):
    """A comparison killed inside a row (a session's end, a crash) loses at most the epochs since the row's last
    checkpoint: the next call resumes the row (exactly, as `lfem-reid train --resume auto`) instead of restarting."""
    from lfem_plugin.tools import train
    extra = (*TINY, "train.max_epoch", "2", "train.save_checkpoints", "True", "train.checkpoint_period", "1")
    real_run, calls = train.run, []

    def stopped_after_epoch_1(cfg, resume="", weights=""):
        calls.append((cfg.train.max_epoch, resume))
        if len(calls) == 1:  # the first call trains one epoch of two, then "the session ends"
            one = cfg.clone()
            one.defrost()
            one.train.max_epoch = 1
            one.freeze()
            real_run(one, resume=resume)
            raise KeyboardInterrupt
        return real_run(cfg, resume=resume, weights=weights)
    monkeypatch.setattr(train, "run", stopped_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        run_compare("quick", ["full"], seeds=[0], out_dir=tmp_path, root=str(tmp_path / "data"), extra=extra)
    assert not (tmp_path / "full_seed0.json").exists()
    import logging
    with caplog.at_level(logging.INFO, logger="lfem_plugin"):
        result = run_compare("quick", ["full"], seeds=[0], out_dir=tmp_path, root=str(tmp_path / "data"),
                             extra=extra)[0]
    assert result["status"] == "ok" and calls == [(2, "auto"), (2, "auto")]
    assert "model.pth.tar-1 (epoch 1)" in caplog.text  # resumed after the first epoch, not restarted
