"""``lfem-reid export onnx`` in an environment without the ``[onnx]`` extra (issue 26)."""
from __future__ import annotations

from lfem_plugin.cli import main

from .test_search import _checkpoint


# ---- export onnx without the [onnx] extra ---------------------------------------------------------------------
def test_export_without_onnxruntime_names_the_extra_and_writes_nothing(tmp_path, capsys, monkeypatch):
    import sys
    _checkpoint(tmp_path / "a.pth", 0)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import onnxruntime` sees when it is not installed
    out = tmp_path / "m.onnx"
    assert main(["export", "onnx", "--weights", str(tmp_path / "a.pth"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "onnxruntime" in err and "pip install 'lfem_plugin[onnx]'" in err and "Traceback" not in err
    assert not out.exists()


def test_export_of_a_model_with_non_finite_weights_fails_and_keeps_no_file(tmp_path, capsys):
    """Issue 38 case 2: `max abs diff: nan` and a JSON line that is not JSON, exit 0, before."""
    import torch

    from lfem_plugin.tools.inference import load_trained
    _checkpoint(tmp_path / "a.pth", 0)
    model, _ = load_trained(str(tmp_path / "a.pth"))
    state = torch.load(tmp_path / "a.pth", weights_only=True)
    weights = model.state_dict()
    first = next(k for k, v in weights.items() if k.startswith("backbone.") and v.is_floating_point())
    state["state_dict"] = dict(weights, **{first: torch.full_like(weights[first], float("nan"))})
    torch.save(state, tmp_path / "nan.pth")
    out = tmp_path / "m.onnx"
    assert main(["export", "onnx", "--weights", str(tmp_path / "nan.pth"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "non-finite features" in err and not out.exists()
