"""``lfem-reid test``: evaluate a trained checkpoint on its targets, optionally with ranked lists, CMC curves and gate
pictures. A plugin model is rebuilt from the checkpoint alone and evaluated on any target (no training split:
:mod:`lfem_plugin.tools.checkpoint_test`); torchreid's own models run torchreid's ``test.evaluate`` pipeline."""
from __future__ import annotations

import argparse

from .train import add_args as add_train_args, config_from_args, log_to_file, summary

HELP = "evaluate a trained checkpoint (on any target: another dataset, a test-only folder)"


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="checkpoint to evaluate")
    parser.add_argument("--visualize", action="store_true",
                        help="write ranked lists, a CMC curve and LFEM gate pictures to data.save_dir")
    add_train_args(parser)


def run(args: argparse.Namespace) -> int:
    from ..registry import MODELS
    cfg = config_from_args(args, test=True)
    log_to_file(cfg.data.save_dir, "test")
    if cfg.model.name not in MODELS:  # torchreid's own models: the training pipeline with test.evaluate
        return _torchreid_test(cfg, args)
    from ..tools.checkpoint_test import evaluate_checkpoint
    from ..utils.distributed import use_cuda
    opts = args.opts[1:] if args.opts[:1] == ["--"] else args.opts
    explicit = None if args.config_file else [str(key) for key in opts[0::2]]  # the user's own overrides
    device = "cuda" if use_cuda(cfg.use_gpu) else "cpu"
    done = evaluate_checkpoint(cfg, args.weights, explicit, device)
    print(summary(done.results))
    if args.visualize:
        _pictures(cfg, done)
    return 0


def _torchreid_test(cfg, args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..tools import train
    from ..tools.visualize import plot_cmc
    engine = train.run(cfg, weights=args.weights)
    print(summary(engine.last_results))
    if args.visualize:
        plot_cmc({name: r["cmc"] for name, r in engine.last_results.items()}, Path(cfg.data.save_dir) / "cmc.png")
        print(f"CMC curve: {Path(cfg.data.save_dir) / 'cmc.png'}; ranked lists: {cfg.data.save_dir}/visrank_<dataset>/")
    return 0


def _pictures(cfg, done, num_queries: int = 8) -> None:
    """CMC curve of every target, and LFEM gate pictures of the first queries (ranked lists: torchreid)."""
    from pathlib import Path

    from ..data.transforms import build_test_transform
    from ..models.sie import camera_argument
    from ..tools.visualize import draw_gate_pictures, plot_cmc
    out, model = Path(cfg.data.save_dir), done.model
    plot_cmc({name: r["cmc"] for name, r in done.results.items()}, out / "cmc.png")
    print(f"CMC curve: {out / 'cmc.png'}; ranked lists: {out}/visrank_<dataset>/")
    if not model.use_lfem:
        return
    transform = build_test_transform(*model.img_size, cfg.data.norm_mean, cfg.data.norm_std)
    for name, result in done.results.items():  # the cameras as the evaluation passed them (test.cross_domain_sie)
        items = done.queries[name][:num_queries]
        cameras = camera_argument([int(item[2]) for item in items], result["sie"]) or [None] * len(items)
        queries = [(item[0], cam, f"pid {item[1]} cam {item[2]}") for item, cam in zip(items, cameras)]
        draw_gate_pictures(model, queries, transform, model.img_size, out / f"lfem_gates_{name}")
        print(f"LFEM gate pictures: {out / f'lfem_gates_{name}'}/")
