"""Datasets (registered into torchreid on import), transforms and the data manager."""
from .datamanager import ReIDDataManager
from .datasets import OccludedDuke, OrlFaces, OrlFacesOccluded
from .market_layout import MarketLayout, MarketLayoutOccluded
from .occluded_benchmarks import OccludedREID, PartialILIDS, PartialREID, PDukeMTMCReID
from .transforms import MultiView, build_test_transform, build_train_transform

__all__ = ["ReIDDataManager", "OccludedDuke", "OrlFaces", "OrlFacesOccluded", "OccludedREID", "PartialREID",
           "PartialILIDS", "PDukeMTMCReID", "MarketLayout", "MarketLayoutOccluded", "MultiView",
           "build_train_transform", "build_test_transform"]
