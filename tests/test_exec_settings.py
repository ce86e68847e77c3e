"""The GPU execution settings: `device=cuda:N`, `exec.chunk` (auto, and the out-of-memory back-off),
`exec.tf32`, `exec.autocast`; bad values told in one paragraph, as in tests/test_bad_inputs.py."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from metarun.config.schema import ConfigError
from metarun.config.store import config_dir, register
from metarun.core import precision
from metarun.run import checkpoint
from metarun.run.build import resolve_device
from metarun.run.execution import Chunking, OutOfMemory
from metarun.run.train import run
from test_bad_inputs import TINY, never_started, refused
from test_execution import ALGOS, problem

register()
CUDA = torch.device("cuda")


# ---- bad values, on the command line ---------------------------------------------------------------------------

@pytest.mark.parametrize(("overrides", "phrases"), [
    pytest.param(["exec.autocast=fp8"], ["`exec.autocast=fp8` is not offered. Valid values: none, bf16.",
                                         "Use `exec.autocast=bf16`"], id="autocast-fp8"),
    pytest.param(["exec.chunk=-1"], ["`exec.chunk=-1` is invalid", "Set `exec.chunk=auto`, or e.g. `exec.chunk=8`."],
                 id="negative-chunk"),
    pytest.param(["exec.chunk=some"], ["`exec.chunk=some` is invalid"], id="chunk-not-a-number"),
    pytest.param(["device=gpu"], ["`device=gpu` is unknown. Valid values: auto, cpu, cuda, cuda:N"], id="device-gpu"),
])
def test_bad_exec_setting(forker, tmp_path, overrides, phrases):
    run_dir = tmp_path / "run"
    refused(forker.run(*TINY, *overrides, f"hydra.run.dir={run_dir}"), 2, *phrases)
    never_started(run_dir)


def test_a_gpu_number_the_machine_does_not_have(forker, tmp_path):
    run_dir = tmp_path / "run"
    out = forker.run(*[o for o in TINY if o != "device=cpu"], "device=cuda:7", f"hydra.run.dir={run_dir}",
                     patch=("gpus", {"count": 1}))
    refused(out, 2, "`device=cuda:7` asks for CUDA GPU number 7, but this machine shows 1 (cuda:0;",
            "Use `device=cuda` for the first one, or `device=cuda:N` with N below 1.")
    never_started(run_dir)


def test_gpu_numbers_are_checked_against_the_count(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1) and resolve_device("cuda") == CUDA
    with pytest.raises(ConfigError, match=r"shows 2 \(cuda:0 to cuda:1;"):
        resolve_device("cuda:2")


def test_tf32_on_a_cpu_is_ignored_with_a_note(forker, tmp_path):
    run_dir = tmp_path / "run"
    out = forker.run(*TINY, "exec.tf32=true", f"hydra.run.dir={run_dir}")
    assert out.returncode == 0, out.stderr
    notes = [line for line in (out.stdout + out.stderr).splitlines() if "exec.tf32" in line]
    assert len(notes) == 1 and "exec.tf32=true has no effect on cpu" in notes[0], notes
    record = json.loads((run_dir / "results.json").read_text())
    assert record["tf32"] is False and record["autocast"] == "none" and record["exec_chunk"] == 2


# ---- exec.chunk=auto ---------------------------------------------------------------------------------------------

def device_with_room(tasks: int, calls: list[int]):
    """A computation that runs out of (simulated) GPU memory above `tasks` tasks per call."""
    def compute(chunk: int) -> str:
        calls.append(chunk)
        if chunk == 0 or chunk > tasks:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return f"ran {chunk}"
    return compute


def test_auto_chunk_halves_after_running_out_of_memory_and_keeps_the_size(caplog):
    chunks, calls = Chunking("auto", CUDA, "vmap", "training step"), []
    with caplog.at_level(logging.INFO, logger="metarun.run.execution"):
        assert chunks.run(device_with_room(5, calls), 32) == "ran 4"
    assert calls == [0, 16, 8, 4] and chunks.size == 4
    said = [r.getMessage() for r in caplog.records]
    assert "ran out of memory on cuda with 32 tasks per vmap call; retrying with 16" in said[0]
    assert said[-1] == "exec.chunk=auto: training step runs 4 tasks per vmap call on cuda"
    calls.clear()
    assert chunks.run(device_with_room(5, calls), 32) == "ran 4" and calls == [4]  # no new probe
    assert chunks.run(device_with_room(3, calls), 32) == "ran 2" and chunks.size == 2  # less room later: halved again
    assert chunks.run(device_with_room(8, calls), 3) == "ran 2" and chunks.tasks_per_call(3) == 2


def test_out_of_memory_that_no_chunk_can_help_is_one_paragraph():
    with pytest.raises(OutOfMemory, match=r"with a single task \(`exec.mode=vmap`, `exec.chunk=auto`\).*Lower "
                                          r"`inner.steps`.*other `exec.\*` settings continues from it"):
        Chunking("auto", CUDA, "vmap", "training step").run(device_with_room(0, []), 32)
    with pytest.raises(OutOfMemory, match=r"with 8 tasks per vmap call \(`exec.chunk=8`\). Set `exec.chunk=auto`"):
        Chunking(8, CUDA, "vmap", "training step").run(device_with_room(4, []), 32)
    with pytest.raises(OutOfMemory, match=r"single task \(`exec.mode=loop`"):
        Chunking("auto", CUDA, "loop", "evaluation").run(device_with_room(0, []), 32)


def test_auto_chunk_on_a_cpu_is_all_tasks_at_once():
    chunks, calls = Chunking("auto", torch.device("cpu"), "vmap", "training step"), []
    assert chunks.run(lambda chunk: calls.append(chunk) or "ok", 25) == "ok"
    assert calls == [0] and chunks.tasks_per_call(25) == 25


def config(*overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("config", overrides=["device=cpu", "train.iterations=3", "train.meta_batch=6",
                                            "train.eval_every=0", "eval.val_tasks=0", "eval.tasks=4", *overrides])


def test_a_run_that_backs_off_records_its_chunk(tmp_path, monkeypatch, caplog):
    import metarun.run.execution as execution

    class OnAGpu(Chunking):  # the training step's chunking as on a GPU; the CPU's memory is not simulated
        def __init__(self, setting, device, mode, what):
            super().__init__(setting, CUDA if what == "training step" else device, mode, what)

    real = execution.task_grads

    def tight(algo, theta, objective, episode, mode, chunk, diagnose, need_loss):
        if chunk == 0 or chunk > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(algo, theta, objective, episode, mode, chunk, diagnose, need_loss)

    monkeypatch.setattr(execution, "Chunking", OnAGpu)
    monkeypatch.setattr(execution, "task_grads", tight)
    with caplog.at_level(logging.INFO, logger="metarun.run.execution"):
        record, _ = run(config("exec.mode=vmap"), tmp_path)
    assert record["exec_chunk"] == 2 and json.loads((tmp_path / "results.json").read_text())["exec_chunk"] == 2
    assert [r.getMessage().rsplit(";", 1)[-1] for r in caplog.records if r.levelno == logging.WARNING] == \
        [" retrying with 3", " retrying with 2"]


def test_a_checkpoint_continues_with_other_execution_settings_only(tmp_path):
    cfg = config()
    record, _ = run(cfg, tmp_path)
    (tmp_path / "results.json").unlink()
    for override in ("exec.mode=loop", "exec.chunk=2", "exec.backend=gloo", "exec.timeout=60"):
        state = checkpoint.resumable(tmp_path, resolved(config(override)))
        assert state is not None and state["iteration"] == 3
    with pytest.raises(ConfigError, match=r"different config \(exec.autocast: none there, bf16 now\)"):
        checkpoint.resumable(tmp_path, resolved(config("exec.autocast=bf16")))
    # A checkpoint written before exec.tf32 and exec.autocast existed was written at their defaults.
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    for key in ("tf32", "autocast"):
        del state["config"]["exec"][key]
    torch.save(state, tmp_path / "checkpoint.pt")
    assert checkpoint.resumable(tmp_path, resolved(config()))["iteration"] == 3
    with pytest.raises(ConfigError, match=r"different config \(exec.tf32: unset there, true now\)"):
        checkpoint.resumable(tmp_path, resolved(config("exec.tf32=true")))


def resolved(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


# ---- precision --------------------------------------------------------------------------------------------------

def test_tf32_is_off_by_default_and_a_cpu_ignores_it(caplog):
    cfg = config()
    assert cfg.exec.tf32 is False and cfg.exec.autocast == "none" and cfg.exec.chunk == "auto"
    with caplog.at_level(logging.WARNING, logger="metarun.core.precision"):
        assert precision.use_tf32(False, torch.device("cpu")) is False and not caplog.records
        assert precision.use_tf32(True, torch.device("cpu")) is False
    assert len(caplog.records) == 1


@pytest.mark.parametrize(("capability", "in_effect"), [((8, 0), True), ((7, 0), False)])
def test_tf32_flags_on_a_gpu(monkeypatch, capability, in_effect):
    # The flags can be set without a GPU; only the capability query needs one, so it is answered here.
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "an older GPU")
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        assert precision.use_tf32(True, CUDA) is in_effect
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert precision.use_tf32(False, CUDA) is False
        # Off means off: cuDNN convolutions too, which PyTorch's default lets use TF32.
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.get_float32_matmul_precision() == "highest"
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


# Measured here (the float32 sine MLP of test_execution, 6 tasks, this CPU): bf16 autocast moved the uniformly
# combined meta-gradient by 0.6-11% of its norm (the most: MAML in loop mode); the README gives Conv4's numbers.
BF16_RELATIVE = 0.15


@pytest.mark.parametrize("mode", ["loop", "vmap"])
@pytest.mark.parametrize("name", ["maml", "fomaml", "imaml", "cavia", "convex_imaml"])
def test_bf16_autocast_runs_and_keeps_float32_meta_gradients(name, mode):
    from metarun.core.functional import flatten
    from metarun.run.execution import task_grads

    theta, loss, episode = problem(torch.float32, name)
    algo = ALGOS[name]()
    ref = task_grads(algo, theta, loss, episode, mode)
    with precision.autocast("bf16", torch.device("cpu")):
        low = task_grads(algo, theta, loss, episode, mode)
    a, b = flatten(ref.meta_grads).mean(0), flatten(low.meta_grads).mean(0)
    assert b.dtype == torch.float32 and torch.isfinite(b).all()
    if name != "convex_imaml":  # its loop-mode deviation on this toy problem was 27%: only that it runs is checked
        assert 0 < ((b - a).norm() / a.norm()).item() < BF16_RELATIVE  # > 0: bf16 really ran
