"""``lfem-reid robustness``: occlusion-robustness curves of a trained checkpoint (plugin or torchreid model) on a
Market-layout test folder (:mod:`lfem_plugin.tools.robustness`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._model import add_model_args, positive, writable_file

HELP = "rank-1/mAP curves of a checkpoint while synthetic occluders of growing area cover the queries"

AREAS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]


def add_args(parser: argparse.ArgumentParser) -> None:
    from ..data.query_occluders import POSITIONS, QUERY_OCCLUDER_KINDS
    add_model_args(parser)
    parser.add_argument("--data", required=True, type=Path, help="Market-layout folder: query/, bounding_box_test/ "
                                                                 "(bounding_box_train/ optional: the donors)")
    parser.add_argument("--query", default="query", help="query folder inside --data")
    parser.add_argument("--gallery", default="bounding_box_test", help="gallery folder inside --data")
    parser.add_argument("--donors", type=Path, default=None, help="folder of NNNN_cC images whose identities give "
                        "the scene/person occluders (default: --data's bounding_box_train/, else the other queries)")
    parser.add_argument("--kinds", nargs="+", default=list(QUERY_OCCLUDER_KINDS), help="occluder kinds")
    parser.add_argument("--positions", nargs="+", default=list(POSITIONS), help="occluder positions")
    parser.add_argument("--areas", nargs="+", type=float, default=AREAS, help="occluded fractions of the query")
    parser.add_argument("--seed", type=int, default=0, help="seed of the occluders (same seed: same pixels)")
    parser.add_argument("--sie", dest="sie_mode", default="auto", choices=["auto", "cameras", "mean", "off"],
                        help="cameras to SIE; auto: the evaluation's choice (cameras on the training folder, else "
                             "test.cross_domain_sie)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--save-images", action="store_true",
                        help="also write each point's occluded queries (a folder analyze-gates reads)")
    parser.add_argument("--out", type=Path, default=Path("robustness"),
                        help="folder for robustness.json, robustness.md, curves.png and the points' boxes")


def load_any(args: argparse.Namespace):
    """``(model, cfg)`` of a plugin or torchreid checkpoint: the config stored in it, --config-file or --model."""
    from .. import _torchreid
    from ..tools.inference import load_trained
    from ..tools.train import is_plugin_model
    from ..utils.checkpoint import load_checkpoint, load_state_strict, strip_module_prefix
    opts = [item for pair in args.set for item in pair] + (["model.name", args.model] if args.model else [])
    state = load_checkpoint(args.weights)
    if not isinstance(state, dict):
        raise ValueError(f"{args.weights} is not a checkpoint (a dict with a state_dict); pass a model.pth.tar-N file")
    if args.config_file or "config" not in state and not args.model:  # load_trained names what to pass
        return load_trained(args.weights, args.config_file, opts)
    from ..config import load_config
    cfg = load_config(None, opts, text=state["config"]) if "config" in state else load_config(None, opts)
    if is_plugin_model(cfg.model.name):
        return load_trained(args.weights, None, opts)
    sd = strip_module_prefix(state.get("state_dict", state))
    num_classes = sd["classifier.weight"].shape[0] if "classifier.weight" in sd else 1
    model = _torchreid.root().models.build_model(cfg.model.name, num_classes=num_classes, loss=cfg.loss.name,
                                                 pretrained=False, use_gpu=False)
    load_state_strict(model, sd, args.weights, f"torchreid model {cfg.model.name}")
    return model.eval(), cfg


def _sie(args: argparse.Namespace, cfg, model) -> str:
    from ..models.interface import ReIDModel
    if args.sie_mode != "auto":
        return args.sie_mode
    if not isinstance(model, ReIDModel) or not model.uses_sie or not cfg.test.use_cameras:
        return "off"
    trained_on = Path(cfg.data.root or ".").expanduser() / cfg.data.market_layout.folder
    same = "market_layout" in cfg.data.sources and trained_on.resolve() == args.data.expanduser().resolve()
    return "cameras" if same else cfg.test.cross_domain_sie


def run(args: argparse.Namespace) -> int:
    from ..data.query_occluders import check_sweep
    from ..engine.evaluation import print_results
    from ..tools.robustness import read_test_folder, sweep
    from ..tools.robustness_report import markdown_table, plot_curves, summarise, write_json
    check_sweep(args.kinds, args.areas, args.positions)
    positive(args.batch_size, "--batch-size")
    writable_file(args.out / "robustness.json", "--out")
    data = read_test_folder(args.data, args.query, args.gallery, args.donors)
    model, cfg = load_any(args)
    result = sweep(model, data, args.kinds, args.areas, args.positions, args.out, (cfg.data.height, cfg.data.width),
                   cfg.data.norm_mean, cfg.data.norm_std, _sie(args, cfg, model), cfg.test.dist_metric,
                   cfg.test.normalize_feature, args.seed, args.batch_size, args.save_images)
    result.update(checkpoint=str(args.weights), model=cfg.model.name, data=str(args.data))
    result["summary"] = summarise(result)
    print_results(result["clean"]["mAP"], [result["clean"]["rank1"]], [1])
    table = markdown_table(result)
    print(table)
    (args.out / "robustness.md").write_text(table + "\n")
    plot_curves(result, args.out / "curves.png", f"{cfg.model.name} on {args.data.name}")
    path = write_json(result, args.out / "robustness.json")
    print(f"written {path}, {args.out / 'robustness.md'}, {args.out / 'curves.png'}")
    return 0
