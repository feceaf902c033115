"""``lfem-reid extract``, ``lfem-reid search``, ``lfem-reid export onnx`` and ``lfem-reid visualize``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True,
                        help="checkpoint written by lfem-reid train (or by torchreid's engine: then --model)")
    parser.add_argument("--config-file", default=None, help="training config (default: the one in the checkpoint)")
    parser.add_argument("--model", default="", help="registered model name, for a checkpoint that holds no config "
                                                     "(e.g. written by torchreid's scripts/main.py)")
    parser.add_argument("--set", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="config override, e.g. --set data.height 384 (repeatable)")


def _load(args: argparse.Namespace, device: str = "cpu"):
    from ..tools.inference import load_trained
    opts = [item for pair in args.set for item in pair] + (["model.name", args.model] if args.model else [])
    return load_trained(args.weights, args.config_file, opts, device=device)


def add_extract_args(parser: argparse.ArgumentParser) -> None:
    _add_model_args(parser)
    parser.add_argument("--images", required=True, help="folder of images, or a text file with one path per line")
    parser.add_argument("--cameras", nargs="+", default=None,
                        help="camera id per image (ints), 'from-name' to parse NNNN_cC names, or 'mean' (the mean SIE "
                             "row: cameras the model never saw in training); default: no SIE")
    parser.add_argument("--out", type=Path, default=Path("features.npy"), help="features .npy (paths beside it)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images with a warning")


def add_export_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", choices=["onnx"], help="export format")
    _add_model_args(parser)
    parser.add_argument("--out", type=Path, default=Path("model.onnx"))
    parser.add_argument("--with-camera", action="store_true", help="add a 'cameras' input (SIE)")


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def _positive(value: int, flag: str) -> None:
    if value < 1:
        raise ValueError(f"{flag} is {value}; it must be at least 1")


def _writable_file(path: Path, flag: str) -> None:
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


_CAMERA_ADVICE = {  # what each command's --cameras accepts instead of from-name
    "extract": "pass one camera id per image (--cameras 0 1 ...), --cameras mean (cameras the model never saw), or "
               "leave --cameras out (no SIE); or rename the files NNNN_cC_...",
    "search": "use --cameras mean (cameras the model never saw) or --cameras none (no SIE), or rename the files "
              "NNNN_cC_...",
}
_CAMERA_ADVICE["visualize"] = _CAMERA_ADVICE["extract"]


def _cameras(spec, paths, command: str):
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
        raise ValueError(f"--cameras from-name: {err}; {_CAMERA_ADVICE[command]}") from None


def run_extract(args: argparse.Namespace) -> int:
    import numpy as np

    from ..data.io import list_images
    from ..tools.inference import extract_features
    _positive(args.batch_size, "--batch-size")
    if args.out.suffix != ".npy":  # np.save would append .npy silently
        args.out = args.out.with_name(args.out.name + ".npy")
    _writable_file(args.out, "--out")
    model, cfg = _load(args, device=args.device)
    paths = list_images(args.images)
    cameras = _cameras(args.cameras, paths, "extract")
    feats, kept = extract_features(model, paths, cfg.data.height, cfg.data.width, cfg.data.norm_mean,
                                   cfg.data.norm_std, cameras, args.batch_size, args.device, args.skip_bad_images)
    np.save(args.out, feats)
    paths_file = args.out.with_suffix(".paths.txt")
    paths_file.write_text("\n".join(kept) + "\n")
    print(f"{feats.shape[0]} features of dimension {feats.shape[1]} -> {args.out} (paths: {paths_file})")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from ..tools.export import export_onnx
    _writable_file(args.out, "--out")
    model, cfg = _load(args)
    report = export_onnx(model, str(args.out), cfg.data.height, cfg.data.width, args.with_camera)
    print(f"exported {args.out} (dynamic batch{', cameras input' if args.with_camera else ''}); onnxruntime vs "
          f"PyTorch max abs diff: {report['max_abs_diff']:.2e}")
    print(json.dumps(report))
    return 0


def add_visualize_args(parser: argparse.ArgumentParser) -> None:
    _add_model_args(parser)
    parser.add_argument("--images", required=True, help="folder of images, or a text file with one path per line")
    parser.add_argument("--cameras", nargs="+", default=None, help="camera id per image, 'from-name' or 'mean'")
    parser.add_argument("--out", type=Path, default=Path("lfem_gates"), help="output folder of PNGs")
    parser.add_argument("--limit", type=int, default=16, help="at most this many images")


def run_visualize(args: argparse.Namespace) -> int:
    from ..data.io import list_images
    from ..data.transforms import build_test_transform
    from ..tools.visualize import draw_gate_pictures
    _positive(args.limit, "--limit")
    model, cfg = _load(args)
    paths = list_images(args.images)[:args.limit]
    cameras = (_cameras(args.cameras, paths, "visualize") or [None] * len(paths))[:len(paths)]
    transform = build_test_transform(cfg.data.height, cfg.data.width, cfg.data.norm_mean, cfg.data.norm_std)
    images = [(path, cam, Path(path).name) for path, cam in zip(paths, cameras)]
    for out, gates in draw_gate_pictures(model, images, transform, (cfg.data.height, cfg.data.width), args.out):
        print(f"{out}: gates {[round(float(g), 3) for g in gates]}")
    return 0


def add_search_args(parser: argparse.ArgumentParser) -> None:
    _add_model_args(parser)
    parser.add_argument("--query", required=True, help="folder of query images, or a text file with one path per line")
    parser.add_argument("--gallery", required=True, help="folder of gallery images, or a list file")
    parser.add_argument("--cameras", choices=["none", "from-name", "mean"], default="none",
                        help="camera ids for SIE: parsed from NNNN_cC names, mean (the mean SIE row: cameras the "
                             "model never saw in training), or none (SIE left out)")
    parser.add_argument("--top-k", type=int, default=10, help="gallery images listed per query")
    parser.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (k1 20, k2 6, lambda 0.3)")
    parser.add_argument("--out", type=Path, default=Path("search_out"),
                        help="results folder (results.csv/json, ranked/ pictures, the gallery feature cache)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images with a warning")


def run_search(args: argparse.Namespace) -> int:
    from ..data.io import list_images
    from ..tools.search import file_sha256, run_search as search
    _positive(args.top_k, "--top-k")
    _positive(args.batch_size, "--batch-size")
    _writable_file(args.out / "results.csv", "--out")
    queries, gallery = list_images(args.query), list_images(args.gallery)
    q_cams, g_cams = (_cameras([args.cameras], paths, "search") if args.cameras != "none" else None
                      for paths in (queries, gallery))
    model, cfg = _load(args, device=args.device)
    summary = search(model, cfg, queries, gallery, q_cams, g_cams, args.out, file_sha256(args.weights),
                     args.top_k, args.rerank, args.batch_size, args.device, args.skip_bad_images)
    cache = "from the cache" if summary["gallery_from_cache"] else "extracted and cached"
    print(f"{summary['queries']} queries against {summary['gallery']} gallery images (gallery features {cache}); "
          f"results: {summary['csv']}, {summary['json']}; pictures: {summary['pictures']}/")
    return 0


def add_analyze_gates_args(parser: argparse.ArgumentParser) -> None:
    _add_model_args(parser)
    parser.add_argument("--root", default=None, help="data root of the dataset (default: the checkpoint's)")
    parser.add_argument("--dataset", default="orl_faces_occluded",
                        help="registered dataset whose queries carry the occluders (e.g. market_layout_occluded, "
                             "with --set data.market_layout.folder DIR unless the checkpoint's config names it)")
    parser.add_argument("--boxes", type=Path, default=None,
                        help="occluder boxes file ({\"queries\": {name: {\"box_xyxy\": [x0, y0, x1, y1], "
                             "\"image_size_wh\": [w, h]}}}); default: occlusion.json beside the queries")
    parser.add_argument("--out", type=Path, default=Path("gate_analysis"),
                        help="folder for gates.json, gates_scatter.png and gates_bars.png")


def run_analyze_gates(args: argparse.Namespace) -> int:
    from ..tools.gate_analysis import analyze_gates, plot_gates, write
    _writable_file(args.out / "gates.json", "--out")
    model, cfg = _load(args)
    result = analyze_gates(model, cfg, cfg.data.root if args.root is None else args.root, args.dataset, args.boxes)
    path = write(result, args.out)
    plot_gates(result, args.out)
    q = result["queries"]
    print(f"occluded queries: Spearman(occluded fraction, gate) = {q['spearman']:.3f} over {q['pairs']} "
          f"(query, group) pairs; mean gate {q['gate_mean_occluded_ge_50']:.3f} where >= 50% occluded "
          f"({q['pairs_occluded_ge_50']} pairs), {q['gate_mean_occluded_le_10']:.3f} where <= 10% "
          f"({q['pairs_occluded_le_10']} pairs)")
    print(f"mean gate per group: clean gallery {[round(v, 3) for v in result['gallery_gate_mean']]}, occluded "
          f"queries {[round(v, 3) for v in result['query_gate_mean']]}")
    print(f"written {path}, {args.out / 'gates_scatter.png'}, {args.out / 'gates_bars.png'}")
    return 0
