"""What the commands that take a trained checkpoint share: its flags, loading it, and checks of their inputs."""
from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_model_args", "load_model", "cuda_available", "positive", "writable_file", "parse_cameras"]


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True,
                        help="checkpoint written by lfem-reid train (or by torchreid's engine: then --model)")
    parser.add_argument("--config-file", default=None, help="training config (default: the one in the checkpoint)")
    parser.add_argument("--model", default="", help="registered model name, for a checkpoint that holds no config "
                                                     "(e.g. written by torchreid's scripts/main.py)")
    parser.add_argument("--set", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="config override, e.g. --set data.height 384 (repeatable)")


def load_model(args: argparse.Namespace, device: str = "cpu"):
    from ..tools.inference import load_trained
    opts = [item for pair in args.set for item in pair] + (["model.name", args.model] if args.model else [])
    return load_trained(args.weights, args.config_file, opts, device=device)


def cuda_available() -> bool:
    from ..utils.distributed import use_cuda
    return use_cuda()


def positive(value: int, flag: str) -> None:
    if value < 1:
        raise ValueError(f"{flag} is {value}; it must be at least 1")


def writable_file(path: Path, flag: str) -> None:
    """Create the parent folder and check ``path`` can be written, before any long work."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PermissionError(f"{flag} {path}: cannot create the folder {path.parent} ({err.strerror}); choose "
                              f"another path") from None
    if path.is_dir():
        raise IsADirectoryError(f"{flag} {path} is a folder; give a file name")
    existed = path.exists()
    try:
        with open(path, "ab"):
            pass
    except OSError as err:
        raise PermissionError(f"{flag} {path} cannot be written ({err.strerror}); choose another path") from None
    if not existed:
        path.unlink()


CAMERA_ADVICE = {  # what each command's --cameras accepts instead of from-name
    "extract": "pass one camera id per image (--cameras 0 1 ...), --cameras mean (cameras the model never saw), or "
               "leave --cameras out (no SIE); or rename the files NNNN_cC_...",
    "search": "use --cameras mean (cameras the model never saw) or --cameras none (no SIE), or rename the files "
              "NNNN_cC_...",
}
CAMERA_ADVICE["visualize"] = CAMERA_ADVICE["extract"]


def parse_cameras(spec, paths, command: str):
    """``--cameras``: None (no SIE), ``from-name`` (parsed from NNNN_cC names), ``mean`` (the mean SIE row, as the
    evaluation gives a dataset that is not a training source) or one int per image; a name without a camera gets
    the advice that ``command`` accepts."""
    from ..data.io import cameras_from_names
    from ..models.sie import UNKNOWN_CAMERA
    if not spec:
        return None
    if spec == ["mean"]:
        return [UNKNOWN_CAMERA] * len(paths)
    if spec != ["from-name"]:
        return [int(c) for c in spec]
    try:
        return cameras_from_names(paths)
    except ValueError as err:
        raise ValueError(f"--cameras from-name: {err}; {CAMERA_ADVICE[command]}") from None
