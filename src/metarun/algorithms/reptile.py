"""Reptile (Nichol et al. 2018): the pseudo-gradient theta - phi_K of K inner steps.

Applied by the outer SGD, theta <- theta - eps * sum_i w_i (theta - phi_i), which with
uniform weights is the paper's theta <- theta + eps * mean_i (phi_i - theta).

`inner_state=carry` is the official code's inner Adam (openai/supervised-reptile, reptile.py):
its moment estimates and step count are never reset during training, so each task's inner loop
starts from the state the previous task left, through the meta-batch and across iterations; at
test time every task starts from the end-of-training state, which is restored after it.
`fresh` starts every task from zero moments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from metarun.algorithms.base import Algorithm, TaskOutput
from metarun.config.schema import INNER_STATES
from metarun.core import inner
from metarun.core.functional import Objective, Params, subtract


class Reptile(Algorithm):
    def __init__(
        self,
        name: str,
        steps: int,
        lr: float,
        inner_optimizer: str = "sgd",
        adam_betas: Sequence[float] = (0.0, 0.999),
        inner_state: str = "fresh",
        sub_batches: int = 1,
    ) -> None:
        super().__init__(name, steps, lr, sub_batches)
        if inner_state not in INNER_STATES:
            raise ValueError(f"inner_state must be one of {', '.join(INNER_STATES)}, got {inner_state!r}")
        if inner_state == "carry" and inner_optimizer != "adam":
            raise ValueError("inner_state='carry' carries Adam's moments; it needs inner_optimizer='adam'")
        self.minimize = inner.optimizer(inner_optimizer, adam_betas)
        self.betas = (float(adam_betas[0]), float(adam_betas[1]))
        self.sequential = inner_state == "carry"
        self.carried: inner.AdamState | None = None  # None until the first training task (then zeros)

    def _start(self, theta: Params) -> inner.AdamState:
        if self.carried is None:
            return inner.AdamState.fresh(theta)
        device = next(iter(theta.values())).device  # a resumed state is loaded on the CPU
        m, v, t = self.carried
        return inner.AdamState({k: x.to(device) for k, x in m.items()}, {k: x.to(device) for k, x in v.items()}, t)

    def adapt(self, theta: Params, objective: Objective, x: Tensor, y: Tensor, steps: int, lr: float) -> Params:
        """Test-time adaptation; with a carried state it starts from the training state and leaves it as it was."""
        if not self.sequential:
            return self.minimize(theta, lambda p: objective(p, x, y), steps, lr)
        return inner.adam_steps(theta, lambda p: objective(p, x, y), steps, lr, self._start(theta), self.betas)[0]

    def task(self, theta: Params, objective: Objective, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> TaskOutput:
        objectives = self.support_objectives(objective, sx, sy)
        if self.sequential:
            phi, self.carried = inner.adam_steps(theta, objectives, self.steps, self.lr, self._start(theta),
                                                 self.betas)
        else:
            phi = self.minimize(theta, objectives, self.steps, self.lr)
        displacement = subtract(theta, phi)
        # Reptile's update needs no query pass; `diagnostics` adds the query losses when logged.
        return displacement, displacement, {}

    def state_dict(self) -> dict[str, Any]:
        if self.carried is None:
            return {}
        m, v, t = self.carried
        return {"adam_m": dict(m), "adam_v": dict(v), "adam_t": t}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.carried = inner.AdamState(dict(state["adam_m"]), dict(state["adam_v"]), int(state["adam_t"]))
