from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
REQUIRE_DATA = "METARUN_REQUIRE_DATA"  # "1" (CI): a missing real dataset fails the suite instead of skipping


# ---- process-wide state: no test may leave it changed ------------------------------------------------------------

def _tf32() -> tuple[Any, Any]:
    # torch 2.14 raises from these getters once its fp32_precision settings disagree: that is a change too.
    try:
        return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    except RuntimeError as e:
        return str(e), None


# Set by pytest for each phase, and by torch once when it first loads its compiler (a cache folder): not a test's.
OWN_ENV = {"PYTEST_CURRENT_TEST", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"}


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in OWN_ENV}


def _set_environ(saved: dict[str, str]) -> None:
    for key in set(os.environ) - set(saved) - OWN_ENV:
        del os.environ[key]
    os.environ.update(saved)


# What a test may not leave changed: name -> (read, restore).
PROCESS_STATE: dict[str, tuple[Callable[[], Any], Callable[[Any], None]]] = {
    "torch threads (torch.set_num_threads)": (torch.get_num_threads, torch.set_num_threads),
    "torch default dtype": (torch.get_default_dtype, torch.set_default_dtype),
    "torch deterministic algorithms": (
        lambda: (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()),
        lambda v: torch.use_deterministic_algorithms(v[0], warn_only=v[1])),
    "torch grad mode": (torch.is_grad_enabled, torch.set_grad_enabled),
    "TF32 flags (torch.backends...allow_tf32)": (_tf32, lambda v: None),
    "os.environ": (_environ, _set_environ),
    "working directory": (os.getcwd, os.chdir),
}


@pytest.fixture(autouse=True)
def no_leaked_state(request):
    """Fails the test that leaves process-wide state changed, naming it, and restores it, so that tests pass alone,
    together and in any order. The global RNGs (torch, numpy, random) are restored after every test, so each test
    starts from the same generator states whatever ran before; they are not failed on, because building any model
    draws its initial weights from torch's global generator (nn.Module's own initialisation)."""
    before = {name: read() for name, (read, _) in PROCESS_STATE.items()}
    rngs = torch.get_rng_state(), np.random.get_state(), random.getstate()
    yield
    after = {name: read() for name, (read, _) in PROCESS_STATE.items()}
    changed = [name for name in PROCESS_STATE if after[name] != before[name]]
    for name in changed:
        PROCESS_STATE[name][1](before[name])
    torch.set_rng_state(rngs[0])
    np.random.set_state(rngs[1])
    random.setstate(rngs[2])
    if changed:
        said = [name if name != "os.environ" else "os.environ (" + ", ".join(sorted(
            k for k in before[name].keys() | after[name].keys() if before[name].get(k) != after[name].get(k))) + ")"
            for name in changed]
        pytest.fail(f"{request.node.nodeid} left process-wide state changed: {'; '.join(said)}. Change it inside "
                    "the test and restore it (the `one_thread` fixture, monkeypatch), or change it in a subprocess.",
                    pytrace=False)


@pytest.fixture
def one_thread():
    """torch's intra-op threads pinned to 1 for this test, restored after it: for comparing in this process with a
    run made in a subprocess of one thread (the `forker` runs), whose float32 reductions then add in the same
    order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
    from metarun.core.functional import Objective
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
    env["OMP_NUM_THREADS"] = "1"  # tiny runs: a second thread only competes with the other test workers
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


def pytest_configure(config):
    """Under pytest-xdist (the default, `-n auto`), each worker process takes its share of the cores for torch's
    threads, as metarun gives each rank its share; set before any test, so it is not a test's change."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, torch.get_num_threads() // workers))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say the random order's seed even under -q (pytest-randomly prints it in the header, which -q hides)."""
    seed = getattr(config.option, "randomly_seed", None)
    if config.pluginmanager.hasplugin("randomly") and isinstance(seed, int):
        terminalreporter.write_line(f"random test order, seed {seed}: `python -m pytest -p randomly "
                                    f"--randomly-seed={seed}` repeats it (`-p no:randomly` runs in file order)")
