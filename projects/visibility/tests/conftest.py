"""The core's fixtures (seeded torch, each test in its own folder, a generated ReID dataset): the project's tests run
with the core's tests (``python -m pytest`` from the repository root)."""
from tests.conftest import _run_in_tmp, _seed, synthetic_root  # noqa: F401
