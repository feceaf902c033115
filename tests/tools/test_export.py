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
