"""``lfem-reid train``: torchreid's ``scripts/main.py`` for plugin and torchreid models (``test`` and ``doctor`` build
their config the same way: ``config_from_args``)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import List, Sequence

HELP = "train a model (lfem_vit or any torchreid model) from a yacs config"


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config-file", default="", help="YAML config (may use _BASE_)")
    parser.add_argument("--model", default="", help="registered model name (lfem_vit, vit_transreid, pcb_p6, ...)")
    parser.add_argument("-s", "--sources", nargs="+", help="training datasets")
    parser.add_argument("-t", "--targets", nargs="+", help="evaluation datasets")
    parser.add_argument("--root", default="", help="data root")
    parser.add_argument("--resume", default="", help="checkpoint to resume from ('auto': newest in save_dir)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides, e.g. train.max_epoch 10")


# Options that take a list (``-s A B``, ``-t C``, ``compare --models/--seeds``) stop at the first config key:
# argparse's ``nargs='+'`` would swallow the ``KEY VALUE`` overrides after them (``-s NAME data.root X``: "Invalid
# dataset name 'data.root'"); those items go back to the overrides, in order.
def is_config_key(item: str) -> bool:
    """``item`` names a config key or a key inside a config section (``train.max_epoch``, ``use_gpu``,
    ``data.market_layout.foldr``: a misspelt key still goes to the overrides, whose error names the closest keys);
    dataset and model names are never section-dotted."""
    from ..config.defaults import get_default_config
    defaults = get_default_config()
    head = str(item).split(".")[0]
    return head in defaults and ("." in str(item) or not isinstance(defaults[head], dict))


def split_list_overrides(args: argparse.Namespace, names: Sequence[str]) -> None:
    """Cut each list option in ``names`` at its first config key; the rest goes before ``args.opts`` (in place).
    ``-t NAME -- KEY VALUE`` keeps working (argparse already ends the list at ``--``)."""
    moved: List[str] = []
    for name in names:
        items = getattr(args, name, None)
        if not items:
            continue
        cut = next((i for i, item in enumerate(items) if is_config_key(item)), None)
        if cut is not None:
            setattr(args, name, list(items[:cut]) or None)
            moved += [str(item) for item in items[cut:]]
    if moved:
        rest = list(args.opts[1:] if args.opts[:1] == ["--"] else args.opts)
        args.opts = moved + rest


def check_overrides(args: argparse.Namespace, parser_flags) -> None:
    """Flags after the ``KEY VALUE`` overrides would be read as overrides: say so instead."""
    misplaced = [item for item in args.opts if item.split("=")[0] in parser_flags]
    if misplaced:
        raise ValueError(f"{' '.join(misplaced)} comes after the KEY VALUE overrides, where it would be read as a "
                         f"config key; put every --flag before the first KEY VALUE pair")


def config_from_args(args: argparse.Namespace, test: bool = False):
    from ..config import load_config
    from ..utils.distributed import use_cuda
    split_list_overrides(args, ("sources", "targets"))  # `-s NAME KEY VALUE`: the overrides are not datasets
    check_overrides(args, args._flags)
    opts = list(args.opts[1:] if args.opts[:1] == ["--"] else args.opts)  # `-t NAME -- KEY VALUE`: ends the list
    for key, value in (("model.name", args.model), ("data.root", args.root)):
        if value:
            opts += [key, value]
    for key, value in (("data.sources", args.sources), ("data.targets", args.targets)):
        if value:
            opts += [key, str(list(value))]
    if not use_cuda():
        opts += ["use_gpu", "False"]
    stored = _stored_config(args) if test else None
    if test:
        opts += ["test.evaluate", "True", "model.pretrained", "False", "model.pretrained_path", "",
                 "model.load_weights", "", "sampler.train_sampler", "RandomSampler"]  # no P x K batch to fill
        if getattr(args, "visualize", False):
            opts += ["test.visrank", "True"]
    return load_config(args.config_file or None, opts, text=stored)


def _stored_config(args: argparse.Namespace):
    """``test`` without ``--config-file``: the config stored in the checkpoint (model, sizes, datasets), as
    ``extract`` and ``search`` use it; a checkpoint without one needs ``--model`` (and for torchreid's own models ``-s``
    or ``data.sources``: their classifier is sized from it)."""
    from ..utils.checkpoint import load_checkpoint
    if args.config_file:
        return None
    state = load_checkpoint(args.weights)
    if state.get("config"):
        return state["config"]
    from ..registry import MODELS
    if not args.model or (args.model not in MODELS and not (args.sources or "data.sources" in args.opts)):
        raise ValueError(f"{args.weights} holds no config (written by torchreid's engine?): pass the training config "
                         f"with --config-file, or name the model and its training data with --model NAME -s "
                         f"DATASET [-t DATASET] (a plugin model needs only --model; torchreid's own are sized from -s)")
    return None


def log_to_file(save_dir: str, kind: str) -> None:
    os.makedirs(save_dir, exist_ok=True)
    handler = logging.FileHandler(os.path.join(save_dir, f"{kind}.log-{time.strftime('%Y-%m-%d-%H-%M-%S')}"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)


def summary(results) -> str:
    return json.dumps({k: {"mAP": round(v["mAP"], 4), "rank1": round(v["cmc"][0], 4)} for k, v in results.items()})


def run(args: argparse.Namespace) -> int:
    from ..tools import train
    cfg = config_from_args(args)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: torchreid's progress lines and results from rank 0 only
        sys.stdout = open(os.devnull, "w")
    else:
        log_to_file(cfg.data.save_dir, "train")
    from ..utils.interrupt import TrainingInterrupted, stop_on_sigterm
    try:
        with stop_on_sigterm():  # SIGTERM: the run's finally releases the lock, then we say where to resume
            engine = train.run(cfg, resume=args.resume or cfg.model.resume)
    except TrainingInterrupted as err:
        print(interrupted_message(err, cfg.data.save_dir), file=sys.stderr)
        return 128 + err.signum  # the shell's code for a death by that signal
    if engine is None:
        print(f"nothing to do: the run in {cfg.data.save_dir} already finished (train.max_epoch "
              f"{cfg.train.max_epoch}); raise train.max_epoch to train further")
        return 0
    print(summary(getattr(engine, "last_results", {})))
    return 0


def interrupted_message(err, save_dir: str, argv: Sequence[str] = ()) -> str:
    """Where an interrupted training resumes: its newest checkpoint and the ``--resume`` command."""
    import shlex

    from ..utils.checkpoint import latest_checkpoint
    from ..utils.run_lock import RunLock
    newest = latest_checkpoint(os.path.join(save_dir, "model"))
    argv = list(argv or sys.argv[1:])
    argv = argv[argv.index("train") + 1:] if "train" in argv else argv
    rest = [a for i, a in enumerate(argv) if a != "--resume" and (i == 0 or argv[i - 1] != "--resume")]
    lock = RunLock(save_dir).path
    held = "" if not lock.exists() else f"; the lock {lock} is still there (delete it if no training runs)"
    if newest is None:
        return f"lfem-reid train: {err} before the first checkpoint of {save_dir}; start it again{held}"
    return (f"lfem-reid train: {err}; the newest checkpoint is {newest}; resume with:\n  lfem-reid train --resume "
            f"{newest} {shlex.join(rest)}\n(or --resume auto){held}")
