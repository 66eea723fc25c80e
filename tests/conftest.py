import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# Profiles: "ci" (default, quick), "dev", and "deep" (thousands of examples).
_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=30, **_common)
settings.register_profile("dev", max_examples=100, **_common)
settings.register_profile("deep", max_examples=2000, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# two threads per test process, or the cores shared out among pytest-xdist's workers (-n)
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _workers)))


def pytest_addoption(parser):
    parser.addoption("--heavy", action="store_true", help="run tests marked heavy")
    parser.addoption("--update-snapshots", action="store_true",
                     help="rewrite tests/snapshots/ from the generated code (review the diff before committing)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--heavy") or os.environ.get("DYNATTN_HEAVY") == "1":
        return
    skip = pytest.mark.skip(reason="heavy: run with --heavy or DYNATTN_HEAVY=1")
    for item in items:
        if "heavy" in item.keywords:
            item.add_marker(skip)

# the cost model's fitted table (deterministic), and a profile cache of this run's own: no test reads or writes
# the user's cache (tests that calibrate point DYNATTN_CACHE_DIR elsewhere themselves)
os.environ["DYNATTN_COST_MODEL"] = "fitted"
os.environ["DYNATTN_CACHE_DIR"] = os.path.join(
    __import__("tempfile").mkdtemp(prefix="dynattn-test-cache-"), "cache")
