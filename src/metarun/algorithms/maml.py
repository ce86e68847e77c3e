"""MAML (Finn et al. 2017): the exact meta-gradient through K differentiable SGD steps.

With MAML++'s options (Antoniou et al. 2019, "How to train your MAML"), each usable alone or together
(`algo=maml_pp` turns on all of them with the paper's settings):

- MSL, `msl_epochs` > 0: the meta-objective is sum_j v_j L_query(phi_j) over the query losses after every
  inner step j; v starts uniform (1/K each) and moves its weight to the last step over `msl_epochs`
  epochs of `epoch_iterations` iterations, then only the last step's loss counts.
- LSLR, `lslr`: a learned inner learning rate per parameter tensor and inner step, the meta-parameters
  `algo.lslr.<name>` ([K], started at `inner.lr`).
- BNWB, `bnwb`: BatchNorm weights and biases per inner step, `algo.bnwb.<name>` ([K, C], started at the
  network's), used by step j's support pass and by the query pass after it; the BatchNorm parameters then
  do not adapt in the inner loop (the official code's default). metarun's BatchNorm keeps no running
  statistics (it always normalises with the batch's), so MAML++'s per-step running statistics have no
  counterpart here.
- DA, `first_order_epochs` > 0: first-order meta-gradients (the inner gradients are constants) for the
  iterations of the first `first_order_epochs` epochs, second order after.
- CA (cosine annealing of the outer learning rate) is the outer loop's: `outer.cosine`.

Beyond K steps at test time (`eval.steps` > `inner.steps`) the last step's learning rates and BatchNorm
weights serve the extra steps.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metarun.algorithms.base import META, Algorithm, TaskOutput, displacement, network
from metarun.core import inner
from metarun.core.autodiff import grad
from metarun.core.functional import Objective, Params

LSLR = META + "lslr."
BNWB = META + "bnwb."


class MAML(Algorithm):
    def __init__(self, name: str, steps: int, lr: float, sub_batches: int = 1, msl_epochs: int = 0,
                 lslr: bool = False, bnwb: bool = False, first_order_epochs: int = 0,
                 epoch_iterations: int = 500) -> None:
        super().__init__(name, steps, lr, sub_batches)
        if msl_epochs < 0 or first_order_epochs < 0 or epoch_iterations < 1:
            raise ValueError("msl_epochs and first_order_epochs must be 0 or more, epoch_iterations at least 1; got "
                             f"{msl_epochs}, {first_order_epochs}, {epoch_iterations}")
        self.msl_epochs, self.lslr, self.bnwb = msl_epochs, lslr, bnwb
        self.first_order_epochs, self.epoch_iterations = first_order_epochs, epoch_iterations

    def meta_parameters(self, theta: Params, objective: Objective) -> Params:
        meta = {}
        if self.bnwb:
            meta.update({BNWB + k: theta[k].detach().expand(self.steps, *theta[k].shape).clone()
                         for k in objective.norm_names})
        if self.lslr:
            adapted = [k for k in theta if not (self.bnwb and k in objective.norm_names)]
            like = next(iter(theta.values()))
            meta.update({LSLR + k: torch.full((self.steps,), self.lr, dtype=like.dtype, device=like.device)
                         for k in adapted})
        return meta

    @property
    def epoch(self) -> int:
        """The training epoch of the current iteration (0 for the first `epoch_iterations`), as MAML++ counts."""
        return max(self.iteration - 1, 0) // self.epoch_iterations

    def step_importance(self) -> list[float] | None:
        """MSL's weights v_j of the query losses after each inner step, or None once only the last one counts.

        Antoniou et al.'s schedule (the official code's per-step loss importance vector): every weight starts
        at 1/K; each epoch the K-1 early ones lose 1/(K * msl_epochs), down to at least 0.03/K, and the last
        gains what they lose, up to at most 1 - 0.03 (K-1)/K.
        """
        k = self.steps
        if not self.msl_epochs or self.epoch >= self.msl_epochs or k == 1:
            return None
        decay, floor = 1.0 / k / self.msl_epochs, 0.03 / k
        early = [max(1.0 / k - self.epoch * decay, floor)] * (k - 1)
        last = min(1.0 / k + self.epoch * (k - 1) * decay, 1.0 - (k - 1) * floor)
        return [*early, last]

    @property
    def first_order(self) -> bool:
        return self.iteration > 0 and self.epoch < self.first_order_epochs

    def forward_params(self, theta: Params, phi: Params, step: int) -> Params:
        """What the network runs with at inner step `step`: phi, with that step's BatchNorm weights (BNWB)."""
        if not self.bnwb:
            return phi
        row = min(step, self.steps - 1)
        return {**phi, **{k[len(BNWB):]: v[row] for k, v in theta.items() if k.startswith(BNWB)}}

    def start(self, theta: Params) -> Params:
        """The parameters the inner loop adapts: the network's (less BatchNorm's under BNWB)."""
        phi = network(theta)
        if self.bnwb:
            phi = {k: v for k, v in phi.items() if BNWB + k not in theta}
        return phi

    def descend(self, theta: Params, support: inner.Losses, steps: int, first_order: bool = False,
                query: inner.Loss | None = None) -> tuple[Params, list[Tensor]]:
        """`steps` SGD steps from theta; returns the adapted parameters and the query losses after each step
        (when `query` is given). The inner gradients are differentiated through unless `first_order`."""
        phi, queries = self.start(theta), []
        for i in range(steps):
            loss = inner.at(support, i)
            g = grad(lambda p, i=i, loss=loss: loss(self.forward_params(theta, p, i)))(phi)
            if first_order:
                g = {k: v.detach() for k, v in g.items()}
            phi = {k: phi[k] - self.rate(theta, k, i) * g[k] for k in phi}
            if query is not None:
                queries.append(query(self.forward_params(theta, phi, i)))
        return phi, queries

    def rate(self, theta: Params, name: str, step: int) -> Tensor | float:
        if not self.lslr:
            return self.lr
        return theta[LSLR + name][min(step, self.steps - 1)]

    def adapt(self, theta: Params, objective: Objective, x: Tensor, y: Tensor, steps: int, lr: float) -> Params:
        if not (self.lslr or self.bnwb):
            return super().adapt(theta, objective, x, y, steps, lr)
        # The learned rates replace eval.lr; the query pass runs with the last step's BatchNorm weights.
        phi, _ = self.descend(theta, lambda p: objective(p, x, y), steps)
        return self.forward_params(theta, phi, max(steps - 1, 0))

    def loss_before(self, theta: Params, objective: Objective, qx: Tensor, qy: Tensor) -> Tensor:
        return objective(self.forward_params(theta, network(theta), 0), qx, qy)

    def task(self, theta: Params, objective: Objective, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> TaskOutput:
        importance = self.step_importance()

        def query_after_adaptation(p: Params) -> tuple[Tensor, tuple[Tensor, Params]]:
            # The inner grads are taken inside the outer `grad`, so their dependence on
            # theta is differentiated too: second order, no approximation (unless DA's first epochs).
            phi, losses = self.descend(p, self.support_objectives(objective, sx, sy), self.steps, self.first_order,
                                       (lambda q: objective(q, qx, qy)) if importance else None)
            after = losses[-1] if importance else objective(self.forward_params(p, phi, self.steps - 1), qx, qy)
            total = sum(v * q for v, q in zip(importance, losses, strict=True)) if importance else after
            return total, (after, phi)

        meta_grad, (after, phi) = grad(query_after_adaptation, has_aux=True)(theta)
        return meta_grad, displacement(theta, phi), {"loss_after": after}
