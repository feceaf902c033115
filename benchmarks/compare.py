"""Compare lfem_vit, its ablations and torchreid's baselines under one protocol (same as ``lfem-reid compare``).

Examples:
    python benchmarks/compare.py --profile quick --seeds 0 1 2 --models baseline_vit lfem_only rerc_only full
    python benchmarks/compare.py --profile paper --models full --vit-weights jx_vit_base_p16_224-80ecf9dd.pth
    python benchmarks/compare.py --report --out compare_out
"""
import sys

from lfem_plugin.cli import main

if __name__ == "__main__":
    sys.exit(main(["compare", *sys.argv[1:]]))
