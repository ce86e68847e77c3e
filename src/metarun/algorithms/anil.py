"""ANIL (Raghu et al. 2020, "Rapid Learning or Feature Reuse?"): MAML whose inner loop adapts the head only.

The body's features are computed once per task (the body does not move in the inner loop); the head
takes `inner.steps` SGD steps on the support features, and the meta-gradient differentiates through those
steps into the head's initialisation and, through the support and query features, into the body: second
order, as in MAML. At test time, too, only the head adapts.

This is the computation `convex_maml` performs: Khullar & Srivastava's Convex MAML is ANIL, named for its
inner problem (a linear head on fixed features under cross-entropy or MSE is convex). `anil` is the same
class under the literature's name, so that a config says what it runs; the two are tested equal.
"""

from __future__ import annotations

from metarun.algorithms.convex_maml import ConvexMAML


class ANIL(ConvexMAML):
    pass
