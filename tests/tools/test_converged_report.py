"""benchmarks/converged_report.py on hand-built RESULTS: exact means, sample spreads, pairing by seed."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def report_module():
    spec = importlib.util.spec_from_file_location("converged_report", REPO / "benchmarks" / "converged_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(results: Path, key: str, seed: int, clean_map: float, status: str = "ok") -> None:
    targets = {"market_layout": {"R1": clean_map + 1, "mAP": clean_map},
               "market_layout_occluded": {"R1": clean_map / 2 + 1, "mAP": clean_map / 2}}
    record = {"model": key, "label": key.title(), "seed": seed, "status": status, "epochs": 90, "wall_s": 600.0,
              "targets": targets}
    (results / "rows").mkdir(parents=True, exist_ok=True)
    (results / "rows" / f"{key}_seed{seed}.json").write_text(json.dumps(record))


def _curves(results: Path, key: str, seed: int, auc_by_position: dict) -> None:
    curves = [{"kind": kind, "position": position, "areas": [0.0, 0.3, 0.6], "mAP": [40.0, 20.0 + i, 10.0],
               "mAP_auc_rel": auc}
              for kind in ("erase", "noise") for i, (position, auc) in enumerate(auc_by_position[kind].items())]
    folder = results / "robustness" / f"{key}_seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "robustness.json").write_text(json.dumps({"curves": curves}))


def test_means_sample_spreads_and_paired_differences(report_module, tmp_path):
    for seed, (base, full) in enumerate([(38.0, 36.0), (40.0, 37.0)]):
        _row(tmp_path, "baseline_vit", seed, base)
        _row(tmp_path, "full", seed, full)
    _row(tmp_path, "full", 2, 99.0, status="failed")  # a failed run is never averaged
    _curves(tmp_path, "baseline_vit", 0, {"erase": {"bottom": 0.5, "top": 0.7}, "noise": {"bottom": 0.8, "top": 0.8}})
    _curves(tmp_path, "baseline_vit", 1, {"erase": {"bottom": 0.4, "top": 0.6}, "noise": {"bottom": 0.9, "top": 0.7}})
    _curves(tmp_path, "full", 0, {"erase": {"bottom": 0.4, "top": 0.6}, "noise": {"bottom": 0.8, "top": 0.9}})
    _curves(tmp_path, "full", 2, {"erase": {"bottom": 0.1, "top": 0.1}, "noise": {"bottom": 0.1, "top": 0.1}})

    ablation = report_module.ablation(tmp_path)
    assert ablation["full"]["seeds"] == [0, 1]
    assert ablation["full"]["clean_mAP"] == {"mean": 36.5, "std": round(float(np.std([36, 37], ddof=1)), 2), "n": 2}
    assert ablation["baseline_vit"]["occluded_mAP"]["mean"] == 19.5

    robustness = report_module.robustness(tmp_path)
    erase = robustness["baseline_vit"]["kinds"]["erase"]
    assert erase["auc_rel"] == {"mean": 0.55, "std": round(float(np.std([0.6, 0.5], ddof=1)), 3), "n": 2}
    assert erase["mAP_mean"] == [40.0, 20.5, 10.0] and erase["auc_rel_by_position"] == {"bottom": 0.45, "top": 0.65}

    report = {"ablation": ablation, "robustness": robustness, "gates": {}}
    text = report_module.markdown(report)
    # seeds 0 and 2 of full against seeds 0 and 1 of the baseline: only seed 0 pairs;
    # erase 0.5 - 0.6 = -0.1, noise 0.85 - 0.8 = +0.05
    assert "| full | 1 | -0.100 | +0.050 |" in text.splitlines()
    assert "| Full | 2 | 90 | 37.5 ± 0.7 | 36.5 ± 0.7 |" in text  # two seeds show a sample spread
    assert "| baseline_vit | 2 | 0.550 ± 0.071 | 0.800 ± 0.000 |" in text
