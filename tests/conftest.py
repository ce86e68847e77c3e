from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
REQUIRE_DATA = "METARUN_REQUIRE_DATA"  # "1" (CI): a missing real dataset fails the suite instead of skipping


def real_data() -> Path:
    """The reference data's folder (the one holding omniglot/): METARUN_DATA, else ../shared/data."""
    return Path(os.environ["METARUN_DATA"]) if os.environ.get("METARUN_DATA") else ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def real_omniglot() -> Path:
    """The real Omniglot archives. Without them the test is skipped, unless METARUN_REQUIRE_DATA=1 says they must
    be there (CI): then it fails."""
    folder = real_data() / "omniglot"
    if not all((folder / f"{name}.zip").is_file() for name in ("images_background", "images_evaluation")):
        reason = (f"no real Omniglot archives in {folder}: set METARUN_DATA to the folder holding omniglot/ "
                  "(`metarun-data omniglot` fetches it), or put the reference data at ../shared/data")
        if os.environ.get(REQUIRE_DATA) == "1":
            pytest.fail(f"{REQUIRE_DATA}=1, but {reason}", pytrace=False)
        pytest.skip(reason)
    return folder


@pytest.fixture(scope="session")
def synthetic_omniglot(tmp_path_factory):
    """Small Omniglot-shaped archives and split files for both protocols (tests/synthetic.py), written once per
    session: copy them before changing them."""
    from synthetic import SPLITS, SyntheticOmniglot, write_omniglot, write_splits

    root = tmp_path_factory.mktemp("synthetic-omniglot")
    write_omniglot(root / "data")
    return SyntheticOmniglot(root / "data", {p: write_splits(root / "splits" / p, p) for p in SPLITS})


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` need a GPU: without one they are skipped, saying why (`pytest -rs` lists them)."""
    if torch.cuda.is_available() or os.environ.get("METARUN_CUDA_TESTS_DEVICE") == "cpu":  # (a rehearsal)
        return
    skip = pytest.mark.skip(reason=f"needs a CUDA GPU: torch {torch.__version__} sees none (CUDA build: "
                                   f"{torch.version.cuda or 'no'}); scripts/gpu_check.py runs these on one")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tiny():
    """A tiny float64 MLP regression problem: model, loss and one task's support and query sets."""
    from metarun.functional import Objective
    from metarun.models import MLP

    torch.manual_seed(0)
    model = MLP(1, [6], 1).double()
    g = torch.Generator().manual_seed(1)
    sx, qx = torch.randn(5, 1, generator=g, dtype=torch.float64), torch.randn(7, 1, generator=g, dtype=torch.float64)
    sy, qy = torch.sin(2 * sx) + 0.3, torch.sin(2 * qx) + 0.3
    loss = Objective(model, torch.nn.functional.mse_loss)
    return model, loss, (sx, sy, qx, qy)


@pytest.fixture
def cli_env(tmp_path):
    """Environment for metarun subprocesses: quiet, no GPU, full errors off."""
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["METARUN_TEST_CWD"] = str(tmp_path)
    return env


@pytest.fixture(scope="session")
def forker(tmp_path_factory):
    """The `metarun` command, each call a fresh process forked from one that imported torch once (tests/forkrun.py)."""
    from forkrun import Forker

    workdir = tmp_path_factory.mktemp("forked")
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    # No GPU (so `device=cuda` is refused everywhere), one thread per tiny run, no cache outside the test folders.
    env |= {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "METARUN_CACHE": str(workdir / "cache")}
    forker = Forker(workdir, env)
    yield forker
    forker.close()
