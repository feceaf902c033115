"""``lfem-reid``: the command line of the plugin (``python -m lfem_plugin`` is the same).

Each subcommand lives in ``lfem_plugin.commands.<module>`` with ``add_args(parser)`` and ``run(args) -> int``;
modules are imported only when their command is listed or run.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
import traceback
import zipfile
from typing import Dict, List, Optional, Tuple

__all__ = ["main", "build_parser", "COMMANDS"]

# subcommand -> (help, 'module[:name]' under lfem_plugin.commands: add[_name]_args / run[_name])
COMMANDS: Dict[str, Tuple[str, str]] = {
    "train": ("train a model (lfem_vit or any torchreid model) from a yacs config", "train"),
    "test": ("evaluate a trained checkpoint", "train:test"),
    "doctor": ("measure a config before a long run: memory, speed, projected hours, health", "doctor"),
    "demo": ("offline CPU demo: LFEM variants vs torchreid baselines on occluded ORL faces", "compare:demo"),
    "compare": ("train and compare models under one protocol (resumable; --report to aggregate)", "compare"),
    "extract": ("extract features of images with a trained checkpoint", "inference:extract"),
    "search": ("rank your own gallery images for query images with a trained checkpoint", "inference:search"),
    "export": ("export a trained checkpoint (onnx), checked against PyTorch", "inference:export"),
    "visualize": ("draw the LFEM gates over the JPM patch groups of some images", "inference:visualize"),
    "analyze-gates": ("how the LFEM gates respond to known occluders (a dataset's occluder boxes file)",
                      "inference:analyze_gates"),
    "prepare": ("build a dataset folder from its original archive (occluded-duke)", "prepare"),
}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = argparse.ArgumentParser(prog="lfem-reid", description="Occluded person ReID with LFEM on torchreid.")
    parser.add_argument("--version", action="version", version=f"lfem_plugin {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, target) in COMMANDS.items():
        module, _, suffix = target.partition(":")
        command = importlib.import_module(f"lfem_plugin.commands.{module}")
        suffix = f"_{suffix}" if suffix else ""
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                help="debug logging, and the traceback of an error (also before COMMAND)")
        getattr(command, f"add{suffix}_args")(sub_parser)
        flags = frozenset(flag for action in sub_parser._actions for flag in action.option_strings)
        sub_parser.set_defaults(_run=getattr(command, f"run{suffix}"), _flags=flags)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for handler in logging.getLogger().handlers:
        if not args.verbose:  # third-party INFO (e.g. 120 lines of onnxscript's optimiser): -v shows it
            handler.addFilter(_own_or_warning)
        if sys.stderr.isatty():  # the progress bar shows the training terms; the full lines go to the log file only
            handler.addFilter(lambda record: record.name != "lfem_plugin.progress")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except (KeyError, ValueError, RuntimeError, OSError, ImportError, zipfile.BadZipFile) as err:
        if args.verbose:
            traceback.print_exc()
        print(f"lfem-reid {args.command}: error: {error_message(err)}", file=sys.stderr)
        return 2


def _own_or_warning(record: logging.LogRecord) -> bool:
    """The terminal shows the plugin's records and everyone's warnings (log files attached later get all)."""
    return record.name.startswith("lfem_plugin") or record.levelno >= logging.WARNING


def error_message(err: BaseException) -> str:
    """The user-facing sentence of an error; a DataLoader worker's re-raised error keeps only its last line (the
    worker's traceback is noise to a user: the message names the file)."""
    message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    if "Original Traceback" in message:
        last = [line for line in message.splitlines() if line.strip()][-1]
        message = last.split(": ", 1)[1] if re.match(r"^[\w.]+(Error|Exception): ", last) else last
    return message


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
