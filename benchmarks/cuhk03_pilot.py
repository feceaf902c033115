"""Short pilot trainings on a *validation* split of CUHK03 camera pair 1, to choose the pedestrians profile's ViT
size without the test queries; appends one record per run to a JSON file (machine, date, settings, wall time,
validation R1/mAP, seconds per epoch).

The validation folder is written by ``lfem-reid prepare val-split --source .../cuhk03_pair1_128x64 --out VAL --ids
100`` (643 training identities; 100 held-out training identities: camera 1 query, camera 2 gallery).

Usage: python benchmarks/cuhk03_pilot.py VAL_FOLDER --model lfem_vit_tiny --epochs 15 [--set KEY VALUE ...]
       [--out benchmarks/results/cuhk03_pair1_pilot.json]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import time
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "cuhk03_pair1" / "lfem_vit_tiny_s12_128x64.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("val_folder", type=Path, help="the validation split (a Market-layout folder)")
    parser.add_argument("--model", default="lfem_vit_tiny", help="registered plugin model")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cuhk03_pair1_pilot.json"))
    parser.add_argument("--set", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="a further config override (repeatable)")
    args = parser.parse_args()
    import torch

    from lfem_plugin.tools import train
    from lfem_plugin.config import load_config
    opts = ["model.name", args.model, "data.market_layout.folder", str(args.val_folder.resolve()), "data.targets",
            "['market_layout']", "train.max_epoch", str(args.epochs), "lfem.warmup_epochs", "1", "use_gpu", "False",
            "train.save_checkpoints", "False", "data.save_dir", f"/tmp/cuhk03_pilot_{args.model}",
            *[v for pair in args.set for v in pair]]
    cfg = load_config(CONFIG, opts)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        engine = train.run(cfg)
    wall = time.perf_counter() - start
    metrics = engine.last_results["market_layout"]
    record = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores shared with other jobs, torch "
                         f"{torch.__version__}, {torch.get_num_threads()} threads",
              "data": f"validation split of cuhk03_pair1_128x64 ({args.val_folder.name}): "
                      f"{json.loads((args.val_folder / 'val_split.json').read_text())['images']}",
              "model": args.model, "epochs": args.epochs, "overrides": args.set,
              "params": sum(p.numel() for p in engine.model.parameters()), "wall_s": round(wall, 1),
              "s_per_epoch": round(wall / args.epochs, 1), "val_R1": round(100 * metrics["cmc"][0], 2),
              "val_mAP": round(100 * metrics["mAP"], 2)}
    runs = json.loads(args.out.read_text())["runs"] if args.out.is_file() else []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"about": __doc__.split("\n\n")[0], "runs": runs + [record]}, indent=1) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
