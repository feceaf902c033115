"""``lfem-reid``: the command line of the plugin (``python -m lfem_plugin`` is the same).

Each subcommand is one module of ``lfem_plugin.commands`` (``analyze-gates`` -> ``analyze_gates.py``) with ``HELP``,
``add_args(parser)`` and ``run(args) -> int``; ``COMMANDS`` names them directly.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
import traceback
import zipfile
from types import ModuleType
from typing import Dict, List, Optional

from .commands import (analyze_gates, compare, demo, doctor, export, extract, prepare, robustness, search, test,
                       train, visualize)

__all__ = ["main", "build_parser", "COMMANDS"]

# subcommand -> its module in lfem_plugin.commands (HELP, add_args(parser), run(args) -> int); each module imports its
# heavy dependencies inside run(), so listing the commands stays fast
COMMANDS: Dict[str, ModuleType] = {
    "train": train, "test": test, "doctor": doctor, "demo": demo, "compare": compare, "extract": extract,
    "search": search, "export": export, "visualize": visualize, "analyze-gates": analyze_gates, "prepare": prepare,
    "robustness": robustness,
}


def build_parser() -> argparse.ArgumentParser:
    from .version import __version__
    parser = argparse.ArgumentParser(prog="lfem-reid", description="Occluded person ReID with LFEM on torchreid.")
    parser.add_argument("--version", action="version", version=f"lfem_plugin {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=command.HELP, description=command.HELP)
        sub_parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                help="debug logging, and the traceback of an error (also before COMMAND)")
        command.add_args(sub_parser)
        flags = frozenset(flag for action in sub_parser._actions for flag in action.option_strings)
        sub_parser.set_defaults(_run=command.run, _flags=flags)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    from .registry import load_projects
    load_projects()  # installed research projects (projects/*) register their names before the commands read them
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
