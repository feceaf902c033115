"""``lfem-reid search``: rank your own gallery images for query images with a trained checkpoint."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._model import add_model_args, load_model, cuda_available, positive, writable_file, parse_cameras

HELP = "rank your own gallery images for query images with a trained checkpoint"


def add_args(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
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
    parser.add_argument("--device", default="cuda" if cuda_available() else "cpu")
    parser.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images with a warning")


def run(args: argparse.Namespace) -> int:
    from ..data.io import list_images
    from ..tools.search import file_sha256, run_search as search
    positive(args.top_k, "--top-k")
    positive(args.batch_size, "--batch-size")
    writable_file(args.out / "results.csv", "--out")
    queries, gallery = list_images(args.query), list_images(args.gallery)
    q_cams, g_cams = (parse_cameras([args.cameras], paths, "search") if args.cameras != "none" else None
                      for paths in (queries, gallery))
    model, cfg = load_model(args, device=args.device)
    summary = search(model, cfg, queries, gallery, q_cams, g_cams, args.out, file_sha256(args.weights),
                     args.top_k, args.rerank, args.batch_size, args.device, args.skip_bad_images)
    cache = "from the cache" if summary["gallery_from_cache"] else "extracted and cached"
    print(f"{summary['queries']} queries against {summary['gallery']} gallery images (gallery features {cache}); "
          f"results: {summary['csv']}, {summary['json']}; pictures: {summary['pictures']}/")
    return 0
