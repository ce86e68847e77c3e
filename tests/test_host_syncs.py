"""The training loop reads the device from the host at most once per iteration that does not log.

On a GPU each such read (`.item()`, `bool()` of a tensor, `.tolist()`, `.cpu()`, an error check such as
`torch.linalg.solve`'s) waits for all the queued work to finish, so the host cannot queue the next
iteration's kernels meanwhile. The one read kept is the finiteness check of the combined meta-gradient (a
single scalar), which keeps a non-finite step from ever reaching the parameters.

The reads are counted here on the CPU, where they cost nothing but run the same code: a TorchDispatchMode
sees every operation, including those inside torch.func's transforms, and counts the ones that hand a
device value to the host; the Python-level copies to the host (`.tolist()`, `.cpu()`, `.numpy()`) are
counted by wrapping them. A run of N + K iterations and a run of N differ by K iterations that neither
log, validate nor checkpoint (both runs log their last iteration and evaluate alike), so the difference
of their counts over K is one such iteration's count.

The outer optimiser here is plain SGD: Adam reads its step count with `.item()`, but that count lives on
the CPU unless Adam is `capturable` (tests/test_cuda_ready.py checks where it lives), so on a GPU that
read waits for nothing.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch.utils._python_dispatch import TorchDispatchMode

from metarun.config.store import config_dir, register
from metarun.run.train import run

# Operations whose result the host must read from the device.
HOST_READS = ("_local_scalar_dense", "_linalg_check_errors", "nonzero", "masked_select", "_unique", "unique_")
HOST_COPIES = ("tolist", "cpu", "numpy")

register()


class HostReads(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name.startswith(HOST_READS):
            self.count[name] += 1
        return func(*args, **(kwargs or {}))


def counted_run(tmp_path, iterations: int, overrides: list[str], monkeypatch) -> Counter[str]:
    reads = HostReads()
    for method in HOST_COPIES:
        real = getattr(torch.Tensor, method)

        def copy(self, *args, _real=real, _name=method, **kwargs):
            reads.count[_name] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, method, copy)
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[
            "device=cpu", f"train.iterations={iterations}", "train.meta_batch=3", "train.log_every=1000",
            "train.eval_every=0", "train.checkpoint_every=0", "eval.val_tasks=0", "eval.tasks=4", "eval.chunk=4",
            "inner.steps=2", "outer.optimizer._target_=torch.optim.SGD", *overrides])
    out = tmp_path / f"run{iterations}"
    out.mkdir()
    with reads:
        run(cfg, out)
    monkeypatch.undo()
    return reads.count


# Agreement (whose 0/0 check reads the device when asked to) with each kind of meta-gradient: through the inner
# steps, by Reptile's displacement, by CG on Hessian-vector products, by linear solves, through a context.
ALGOS = ["maml", "reptile", "imaml", "convex_imaml", "cavia"]
CASES = [*(pytest.param(a, "vmap", "agreement", id=f"{a}-vmap-agreement") for a in ALGOS),
         pytest.param("maml", "loop", "uniform", id="maml-loop-uniform")]


@pytest.mark.parametrize(("algo", "mode", "weighting"), CASES)
def test_one_host_read_per_iteration_that_does_not_log(tmp_path, monkeypatch, algo, mode, weighting):
    overrides = [f"algo={algo}", f"exec.mode={mode}", f"weighting={weighting}"]
    short, long = (counted_run(tmp_path, n, overrides, monkeypatch) for n in (2, 4))
    per_iteration = {k: (long[k] - short[k]) / 2 for k in long.keys() | short.keys() if long[k] != short[k]}
    assert per_iteration == {"_local_scalar_dense": 1}, per_iteration
