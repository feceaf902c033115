"""Any folder in the Market-1501 layout as a dataset: ``market_layout`` and ``market_layout_occluded``.

The folder holds ``bounding_box_train/`` (optional), a query folder and ``bounding_box_test/`` (the gallery), with
images named ``NNNN_cC...`` (identity ``NNNN``, camera ``C`` from 1). It is found as torchreid finds every dataset:
under ``data.root``, in the folder named by ``data.market_layout.folder`` (an absolute path is taken as it is). The
query folder is a key (``data.market_layout.query``, default ``query``), so a second query set over the same
gallery - e.g. the same queries with occluders pasted over them - is one override; ``market_layout_occluded`` reads
``data.market_layout.occluded_query`` (default ``query_occluded``) instead, so that both query sets are scored in one
run (``data.targets [market_layout, market_layout_occluded]``). Both read the same cameras: a model trained on
``market_layout`` gives the occluded queries their own camera's SIE row (:data:`SAME_CAMERAS`).

Identities follow torchreid's ``Market1501.process_dir``: junk images (identity -1) are skipped in every split;
identity 0000 (Market-1501's distractors) is kept, as torchreid keeps it (in the gallery it is a distractor that
matches no query), and ``_junk_pids`` [0, -1] leaves both out when ``combineall`` adds test images to training.
Training identities are relabelled ``0..N-1`` in sorted order; query and gallery keep theirs; camera id = C - 1.
A folder without ``bounding_box_train/`` is a test-only target (no training split, ``num_train_pids`` 0).

The data manager passes a dataset nothing but ``data.root``, so the folder and query names reach these classes
through :func:`market_layout_options`, a context manager around the data manager's construction
(:class:`~lfem_plugin.data.datamanager.ReIDDataManager` opens it with the config's keys). With torchreid alone::

    with market_layout_options(folder="/data/my_market_folder", query="query_occluded"):
        dm = torchreid.data.ImageDataManager(root="", sources="market_layout")

Reference: Zheng et al., "Scalable Person Re-identification: A Benchmark", ICCV 2015 (the Market-1501 layout);
torchreid ``torchreid/data/datasets/image/market1501.py`` (identity rules).
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, List, Optional

from ..registry import DATASETS
from .datasets import DUKE_SPLITS, Item, SafeImageDataset, drop_dangling_links, relabel_ids
from .io import IMAGE_SUFFIXES, parse_reid_name
from .occluded_benchmarks import Layout, _listing, _pick, init_without_training, split_dirs

__all__ = ["MarketLayoutOptions", "market_layout_options", "current_options", "market_folder", "scan_market_split",
           "MarketLayout", "MarketLayoutOccluded", "SAME_CAMERAS", "JUNK_PID"]

_logger = logging.getLogger(__name__)

JUNK_PID = -1  # torchreid's Market1501: "junk images are just ignored"
# A target that reads the same cameras as a training source: its camera ids are that source's (SIE rows).
SAME_CAMERAS = {"market_layout_occluded": "market_layout"}


@dataclass(frozen=True)
class MarketLayoutOptions:
    """Where ``market_layout`` and ``market_layout_occluded`` read (config ``data.market_layout.*``).

    Attributes:
        folder: the Market-layout folder, relative to the data root (torchreid's convention) or absolute.
        query: the query folder of ``market_layout`` inside it.
        occluded_query: the query folder of ``market_layout_occluded`` inside it.
    """

    folder: str = "market_layout"
    query: str = DUKE_SPLITS["query"]
    occluded_query: str = "query_occluded"


_OPTIONS = MarketLayoutOptions()


def current_options() -> MarketLayoutOptions:
    """The options in force (the defaults outside :func:`market_layout_options`)."""
    return _OPTIONS


@contextlib.contextmanager
def market_layout_options(**options: str) -> Iterator[MarketLayoutOptions]:
    """Set :class:`MarketLayoutOptions` fields (``folder``, ``query``, ``occluded_query``) while the block runs;
    the previous options come back afterwards, also on an error. Unknown names raise ``TypeError``."""
    global _OPTIONS
    previous, _OPTIONS = _OPTIONS, replace(_OPTIONS, **options)
    try:
        yield _OPTIONS
    finally:
        _OPTIONS = previous


def market_folder(root: str, folder: str) -> Path:
    """``root/folder`` (``folder`` alone when absolute), ``~`` expanded; raises ``FileNotFoundError`` naming both
    keys when it is not a folder."""
    path = Path(os.path.expanduser(root or ".")) / os.path.expanduser(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"Market-layout folder {path} does not exist (data.root {root!r} + "
                                f"data.market_layout.folder {folder!r}); set data.market_layout.folder to the folder "
                                f"holding bounding_box_train/, query/ and bounding_box_test/ (relative to data.root, "
                                f"or absolute)")
    return path


def scan_market_split(split_dir: Path) -> List[Item]:
    """``(path, pid, camid)`` of every ``NNNN_cC...`` image directly in ``split_dir`` (sorted), junk (-1) skipped;
    raises ``FileNotFoundError`` for a folder without images and ``ValueError`` naming a file whose name does not
    follow the pattern."""
    paths = sorted(str(p) for p in split_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                   and (p.is_file() or p.is_symlink()))
    paths = drop_dangling_links(paths, str(split_dir))
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) directly in {split_dir}; a Market-layout "
                                f"split folder holds NNNN_cC_*.jpg files")
    items = [(path, *parse_reid_name(path)) for path in paths]
    kept = [item for item in items if item[1] != JUNK_PID]
    if len(kept) < len(items):
        _logger.info("%s: skipped %d junk image(s) (identity -1)", split_dir, len(items) - len(kept))
    return kept


@DATASETS.register(name="market_layout")
class MarketLayout(SafeImageDataset):
    """A folder in the Market-1501 layout (see the module docstring): ``bounding_box_train/`` (optional), the query
    folder ``data.market_layout.query`` and ``bounding_box_test/``.

    Reference: Zheng et al., ICCV 2015 (layout); torchreid ``Market1501`` (identity rules).
    """

    name = "market_layout"
    _junk_pids = [0, JUNK_PID]  # torchreid's Market1501: left out when combineall adds test images to training

    def query_dir_name(self) -> str:
        """The query folder this dataset reads (``data.market_layout.query``)."""
        return current_options().query

    def __init__(self, root: str = "", mode: str = "train", verbose: bool = True, **kwargs) -> None:
        options = current_options()
        base = market_folder(root, options.folder)
        layout = Layout(f"{self.name} ({base})", (base.name,), (self.query_dir_name(),), (DUKE_SPLITS["gallery"],))
        query_dir, gallery_dir = split_dirs(base, layout)
        query, gallery = scan_market_split(query_dir), scan_market_split(gallery_dir)
        train_dir: Optional[Path] = _pick(base, [DUKE_SPLITS["train"]])
        if train_dir is None:
            if mode == "train":
                raise FileNotFoundError(f"{self.name}: {base} holds {_listing(base)} but no {DUKE_SPLITS['train']}/, "
                                        f"so it is a test-only target: list {self.name} in data.targets only, and "
                                        f"train on another dataset")
            init_without_training(self, query, gallery, mode=mode, verbose=verbose, **kwargs)
            return
        train = relabel_ids(scan_market_split(train_dir))
        super().__init__(train, query, gallery, mode=mode, verbose=verbose, **kwargs)


@DATASETS.register(name="market_layout_occluded")
class MarketLayoutOccluded(MarketLayout):
    """``market_layout`` with the query folder ``data.market_layout.occluded_query`` (default ``query_occluded``):
    the occluded queries of the same folder, scored in the same run as the clean ones.

    Reference: Zheng et al., ICCV 2015 (layout); Zhuo et al., "Occluded Person Re-identification", ICME 2018
    (occluded queries against a whole-body gallery).
    """

    name = "market_layout_occluded"

    def query_dir_name(self) -> str:
        """The query folder this dataset reads (``data.market_layout.occluded_query``)."""
        return current_options().occluded_query
