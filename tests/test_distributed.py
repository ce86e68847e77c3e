"""torch.distributed, with real gloo processes on the CPU: ranks sharing a meta-batch give one process's
meta-gradient (float64, 1e-10) for every algorithm and weighting, hold identical parameters, and a whole
torchrun run writes one process's results; stops, resumes and bad input across ranks."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from hydra import compose, initialize_config_dir

from metarun.config.store import config_dir, register
from metarun.run.build import build

register()

ALGOS = ("maml", "fomaml", "reptile", "imaml", "convex_maml", "convex_imaml", "cavia", "anil", "meta_sgd",
         "maml_pp")
WEIGHTINGS = ("uniform", "agreement", "loss_softmax")
# 7 tasks: 2 and 3 ranks split it unevenly (4+3, 3+2+2), which must still give the one-process sum.
BASE = ["device=cpu", "train.meta_batch=7", "inner.steps=2", "inner.lr=0.05"]


def config(*overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def overrides_for(algo: str, weighting: str) -> list[str]:
    own = {"maml_pp": ["algo.epoch_iterations=2"], "cavia": ["algo.context_size=3"]}.get(algo, [])
    return [f"algo={algo}", f"weighting={weighting}", *BASE, *own]


def combined(algo: str, weighting: str) -> dict[str, torch.Tensor]:
    """The combined meta-gradient of one meta-batch in float64, through build and the loop's meta_step, as the
    environment (one process, or a rank) runs it."""
    from metarun.run.train import meta_step

    parts = build(config(*overrides_for(algo, weighting)))
    theta = {k: v.double() for k, v in parts.theta().items()}
    episode = parts.source.sample("train", 7, 1, 10, 10, torch.Generator().manual_seed(3))
    episode = type(episode)(*(t.double() for t in episode))
    # MAML++ in its second-order, multi-step-loss epochs (iteration 3 of 2-iteration epochs); everything else
    # ignores the iteration.
    return meta_step(parts, theta, episode, logging=True, iteration=3).combined


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, size: int, port: int) -> dict[str, str]:
    return {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(size), "RANK": str(rank),
            "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(size)}


def _every_combination(rank: int, size: int, port: int, out: str) -> None:
    os.environ.update(rank_env(rank, size, port))
    torch.set_num_threads(1)
    grads = {f"{a}+{w}": combined(a, w) for a in ALGOS for w in WEIGHTINGS}
    torch.save(grads, Path(out) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def single():
    return {f"{a}+{w}": combined(a, w) for a in ALGOS for w in WEIGHTINGS}


@pytest.mark.slow
@pytest.mark.parametrize("size", [2, 3])
def test_ranks_give_one_process_meta_gradient_for_every_algorithm_and_weighting(tmp_path, single, size):
    mp.start_processes(_every_combination, args=(size, free_port(), str(tmp_path)), nprocs=size,
                       start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(size)]
    for name, ours in single.items():
        for rank, theirs in enumerate(ranks):
            for k, v in ours.items():
                # Every rank holds the whole batch's sum: the same bytes on each, one process's sum to 1e-10.
                assert torch.equal(theirs[name][k], ranks[0][name][k]), f"{name} {k}: rank {rank} differs"
                torch.testing.assert_close(theirs[name][k], v, rtol=1e-10, atol=1e-12, msg=f"{name} {k}")


def torchrun(args: list[str], cwd: Path, size: int = 2, **kwargs) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env |= {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={size}",
           "-m", "metarun", *args]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kwargs)


def metarun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env |= {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "metarun", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


RUN = ["train.iterations=30", "train.meta_batch=5", "train.eval_every=10", "eval.val_tasks=10", "eval.tasks=25",
       "eval.chunk=10", "exec.mode=loop", "train.checkpoint_every=5"]
TIMINGS = {"seconds", "train_seconds", "world_size", "backend", "resumed_from"}


def finished(p: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def same_results(a: Path, b: Path) -> None:
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (a, b))
    assert {k: v for k, v in ra.items() if k not in TIMINGS} == {k: v for k, v in rb.items() if k not in TIMINGS}
    # Per-task scores: the loop adapts each task alone, the same computation on any rank.
    assert (a / "scores.csv").read_text() == (b / "scores.csv").read_text()


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("alone")
    done = metarun([*RUN, "hydra.run.dir=run"], cwd)
    assert done.returncode == 0, done.stderr
    return cwd / "run"


@pytest.mark.slow
def test_a_two_rank_torchrun_run_writes_one_process_results(tmp_path, alone):
    code, out, err = finished(torchrun([*RUN, "hydra.run.dir=run"], tmp_path))
    assert code == 0, err
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    assert record["world_size"] == 2 and record["backend"] == "gloo"
    assert out.count("results:") == 1  # rank 0 alone prints
    same_results(alone, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted(p.name for p in alone.iterdir())


@pytest.mark.slow
def test_the_default_folder_is_rank_zeros_on_every_rank(tmp_path):
    code, _, err = finished(torchrun(["train.iterations=2", "train.meta_batch=4", "eval.tasks=4",
                                      "eval.val_tasks=0"], tmp_path))
    assert code == 0, err
    assert len(list((tmp_path / "outputs" / "runs").glob("*/*"))) == 1


def wait_for_checkpoint(folder: Path, p: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not (folder / "checkpoint.pt").is_file():
        assert p.poll() is None, p.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.2)


def ranks_of(p: subprocess.Popen) -> list[int]:
    """The pids of the torchrun job's rank processes."""
    out = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def kill_the_job(p: subprocess.Popen) -> None:
    """kill -9 of torchrun and its ranks (which torchrun starts in sessions of their own)."""
    for pid in [*ranks_of(p), p.pid]:
        os.kill(pid, signal.SIGKILL)


# A run long enough to stop in the middle of: the stop comes within 0.2 s of the first checkpoint (iteration 5),
# about 3 of these iterations, and 115 remain.
LONG = [*RUN, "train.iterations=120"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The long run never stopped, in one process: what every stopped and resumed run below must write, on any
    number of ranks (a 2-rank run writes one process's results: test_a_two_rank_torchrun_run_writes_one_process_
    results)."""
    cwd = tmp_path_factory.mktemp("uninterrupted")
    done = metarun([*LONG, "hydra.run.dir=run"], cwd)
    assert done.returncode == 0, done.stderr
    return cwd / "run"


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigterm-one-rank", "kill-9-the-job"])
def test_a_stopped_two_rank_run_resumes_to_the_uninterrupted_results(tmp_path, uninterrupted, how):
    args = [*LONG, "hydra.run.dir=run"]
    p = torchrun(args, tmp_path)
    wait_for_checkpoint(tmp_path / "run", p)
    if how == "sigterm-one-rank":
        ranks = ranks_of(p)
        assert len(ranks) == 2
        os.kill(ranks[1], signal.SIGTERM)  # one rank only: every rank stops after the same iteration
    else:
        kill_the_job(p)
    code, _, err = finished(p)
    assert code != 0
    assert not (tmp_path / "run" / "results.json").exists()
    code, _, err = finished(torchrun(args, tmp_path))
    assert code == 0, err
    resumed = json.loads((tmp_path / "run" / "results.json").read_text())
    assert resumed["resumed_from"] is not None
    same_results(uninterrupted, tmp_path / "run")


@pytest.mark.slow
def test_a_checkpoint_of_two_ranks_resumes_in_one_process(tmp_path, uninterrupted):
    """The algorithm does not depend on the world size, so neither does the checkpoint: resumable."""
    p = torchrun([*LONG, "hydra.run.dir=run"], tmp_path)
    wait_for_checkpoint(tmp_path / "run", p)
    kill_the_job(p)
    p.communicate()
    done = metarun([*LONG, "hydra.run.dir=run"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "run" / "results.json").read_text())["resumed_from"] is not None
    same_results(uninterrupted, tmp_path / "run")


def param_hash(params: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(params):
        h.update(k.encode())
        h.update(params[k].detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def _steps_and_hash(rank: int, size: int, port: int, out: str) -> None:
    os.environ.update(rank_env(rank, size, port))
    torch.set_num_threads(1)
    from metarun.run.train import meta_step, outer_step

    parts = build(config(*BASE, "algo=meta_sgd", "weighting=agreement"))
    params = parts.parameters()
    optimizer = torch.optim.Adam(params.values(), lr=0.01)
    generator = torch.Generator().manual_seed(0)
    for it in range(1, 6):
        episode = parts.source.sample("train", 7, 1, 10, 10, generator)
        outer_step(optimizer, params, meta_step(parts, parts.theta(), episode, it % 2 == 0, it).combined)
    moments = {f"{k}.{s}": v for k, p in params.items() for s, v in optimizer.state[p].items() if v.dim()}
    Path(out, f"hash{rank}").write_text(param_hash(dict(params)) + " " + param_hash(moments))


@pytest.mark.slow
def test_every_rank_holds_identical_parameters_and_optimiser_state_after_n_steps(tmp_path):
    mp.start_processes(_steps_and_hash, args=(2, free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    assert (tmp_path / "hash0").read_text() == (tmp_path / "hash1").read_text()


def test_cuda_ranks_need_a_gpu_each(monkeypatch):
    from metarun.config.schema import ConfigError
    from metarun.core import distributed

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    env = distributed.Environment(rank=3, size=4, local_rank=3, local_size=4)
    with pytest.raises(ConfigError, match=r"runs 4 ranks with `device=cuda`, but it has 2 CUDA GPU\(s\).*"
                                          r"--nproc_per_node=2"):
        distributed.rank_device("cuda", env)
    env = distributed.Environment(rank=1, size=2, local_rank=1, local_size=2)
    assert distributed.rank_device("cuda", env) == "cuda:1"
    assert distributed.rank_device("cpu", env) == "cpu"


@pytest.mark.slow
@pytest.mark.parametrize(("args", "says"), [
    (["train.meta_batch=1"], "`train.meta_batch=1` is smaller than the 2 ranks of this run"),
    (["exec.backend=nccl"], "`exec.backend=nccl` carries CUDA tensors only"),
    (["algo=reptile", "algo.inner_optimizer=adam", "algo.inner_state=carry", "exec.mode=loop"],
     "this run has 2 ranks that would run them side by side"),
    (["trian.iterations=3"], "trian"),
])
def test_bad_input_under_torchrun_is_said_once_and_every_rank_fails(tmp_path, args, says):
    code, out, err = finished(torchrun([*RUN, "hydra.run.dir=run", *args], tmp_path))
    assert code != 0
    assert err.count("metarun: error:") == 1, err
    assert says in err
    assert not (tmp_path / "run").exists()  # nothing partial written


def _one_rank_hangs(rank: int, size: int, port: int, out: str) -> None:
    os.environ.update(rank_env(rank, size, port))
    from metarun.core import distributed

    world = distributed.join(distributed.environment(), torch.device("cpu"), "auto", timeout_s=3)
    if rank == 1:  # hangs: never joins the all-reduce (until rank 0 has said so, or 20 s)
        deadline = time.monotonic() + 20
        while not Path(out, "said").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        return
    start = time.monotonic()
    try:
        world.sum(torch.ones(3))
    except distributed.RankFailed as e:
        Path(out, "said").write_text(f"{time.monotonic() - start:.1f} {e}")


@pytest.mark.slow
def test_a_rank_that_hangs_makes_the_others_fail_within_the_timeout(tmp_path):
    mp.start_processes(_one_rank_hangs, args=(2, free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    seconds, said = (tmp_path / "said").read_text().split(" ", 1)
    assert float(seconds) < 15
    assert said.startswith("rank 0 of 2: a collective (all_reduce) failed: another rank died or did not answer "
                           "within `exec.timeout=3` seconds")
