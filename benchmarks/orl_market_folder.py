"""Write the offline ORL faces as a Market-layout folder, the input of ``lfem-reid robustness``'s docs example.

Identities s21-s40 (the ORL proxy's test identities): images 1-2 -> ``query/`` (camera 1), 3-10 ->
``bounding_box_test/`` (camera 2); s1-s20 (its training identities) -> ``bounding_box_train/``: the donors of the
scene/person occluders. Usage: ``python benchmarks/orl_market_folder.py OUT_DIR``, then see docs/ROBUSTNESS.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from lfem_plugin.data.datasets import find_orl_root, orl_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    out = parser.parse_args().out
    train, query, gallery = orl_split(find_orl_root(""))
    for split, items in (("bounding_box_train", train), ("query", query), ("bounding_box_test", gallery)):
        (out / split).mkdir(parents=True, exist_ok=True)
        for i, (path, pid, camid) in enumerate(items):
            name = f"{pid + (1 if split == 'bounding_box_train' else 101):04d}_c{camid + 1}s1_{i:06d}_00.png"
            Image.open(path).convert("RGB").save(out / split / name)
    print(f"written {out}: {len(train)} train, {len(query)} query, {len(gallery)} gallery images")


if __name__ == "__main__":
    main()
