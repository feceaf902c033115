"""``lfem-reid test``: evaluate a trained checkpoint on its targets (torchreid's ``test.evaluate``), optionally with
ranked lists, CMC curves and gate pictures."""
from __future__ import annotations

import argparse

from .train import add_args as add_train_args, config_from_args, log_to_file, summary

HELP = "evaluate a trained checkpoint"


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="checkpoint to evaluate")
    parser.add_argument("--visualize", action="store_true",
                        help="write ranked lists, a CMC curve and LFEM gate pictures to data.save_dir")
    add_train_args(parser)


def run(args: argparse.Namespace) -> int:
    from ..tools import train
    from ..utils.distributed import unwrap
    cfg = config_from_args(args, test=True)
    log_to_file(cfg.data.save_dir, "test")
    engine = train.run(cfg, weights=args.weights)  # the training pipeline with test.evaluate: one path
    print(summary(engine.last_results))
    if args.visualize:
        _pictures(cfg, engine.datamanager, unwrap(engine.model), engine)
    return 0


def _pictures(cfg, dm, model, engine, num_queries: int = 8) -> None:
    """CMC curve of every target, and LFEM gate pictures of the first queries (ranked lists: torchreid)."""
    from pathlib import Path

    from ..models.interface import ReIDModel
    from ..models.sie import camera_argument
    from ..tools.visualize import draw_gate_pictures, plot_cmc
    out = Path(cfg.data.save_dir)
    plot_cmc({name: r["cmc"] for name, r in engine.last_results.items()}, out / "cmc.png")
    print(f"CMC curve: {out / 'cmc.png'}; ranked lists: {out}/visrank_<dataset>/")
    if not isinstance(model, ReIDModel) or not model.use_lfem:
        return
    for name in engine.last_results:  # the cameras as the evaluation passed them (test.cross_domain_sie)
        items = dm.test_dataset[name]["query"][:num_queries]
        mode = engine.sie_mode(name) if model.uses_sie else "off"
        cameras = camera_argument([int(item[2]) for item in items], mode) or [None] * len(items)
        queries = [(item[0], cam, f"pid {item[1]} cam {item[2]}") for item, cam in zip(items, cameras)]
        draw_gate_pictures(model, queries, dm.transform_te, (cfg.data.height, cfg.data.width),
                           out / f"lfem_gates_{name}")
        print(f"LFEM gate pictures: {out / f'lfem_gates_{name}'}/")
