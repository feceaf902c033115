"""A trained run rebuilt on its own training path, and the command line of the scripts that read such runs
(``gate_gradients.py``, ``visibility_probe.py``)."""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple


def rebuild_run(run: Path, tag: str, edit: Optional[Callable[[Any], None]] = None) -> Tuple[Any, Any, Any, Any]:
    """``(cfg, datamanager, engine, model)`` of the run folder ``run`` (``lfem-reid compare`` runs or ``lfem-reid
    train`` save dirs), built from the config stored in its last checkpoint (``edit(cfg)`` may change it first;
    loader workers 0, logs under ``/tmp/<tag>_<run>``), with the checkpoint's weights; Python's, numpy's and
    torch's seeds are set to 0 before the data manager, so the PK sampler's batches are the same on every call.
    Raises ``FileNotFoundError`` when ``run/model`` holds no checkpoint and ``ValueError`` when the checkpoint holds
    no config."""
    import lfem_visibility  # noqa: F401  (its keys, names and family)
    from lfem_plugin.config import load_config
    from lfem_plugin.tools import train as T
    from lfem_plugin.utils.checkpoint import latest_checkpoint, load_checkpoint
    ckpt = latest_checkpoint(run / "model")
    if ckpt is None:
        raise FileNotFoundError(f"{run / 'model'} holds no checkpoint")
    state = load_checkpoint(ckpt)
    if "config" not in state:
        raise ValueError(f"{ckpt} holds no config: run it with lfem-reid train or compare")
    cfg = load_config(None, text=state["config"])
    cfg.defrost()
    cfg.data.workers, cfg.data.save_dir = 0, str(Path("/tmp") / f"{tag}_{run.name}")
    if edit is not None:
        edit(cfg)
    cfg.freeze()
    T.set_seed(0)  # torchreid's RandomIdentitySampler draws with random / numpy, not torch
    dm = T.build_datamanager(cfg)
    engine, model = T.build_engine(cfg, dm)
    model.load_state_dict(state["state_dict"])
    return cfg, dm, engine, model


def main_over_runs(description: str, default_out: str, measure: Callable[[Path, int], Dict[str, Any]],
                   show: Callable[[str, Dict[str, Any]], None]) -> None:
    """``RUN [RUN ...] [--batches 4] [--out FILE]``: ``measure(run, batches)`` for each run (2 CPU threads),
    ``show(run name, result)``, and one JSON with the date, machine and batches."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path(default_out))
    args = parser.parse_args()
    import torch
    torch.set_num_threads(2)
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()} cpu", "batches": args.batches,
              "runs": {}}
    for run in args.runs:
        result["runs"][run.name] = measured = measure(run, args.batches)
        show(run.name, measured)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written {args.out}")
