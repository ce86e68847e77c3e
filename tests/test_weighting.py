"""Gradient-agreement weights (Eshratifar et al. 2018, eq. 13) against hand-computed cases."""

from __future__ import annotations

import pytest
import torch

from metarun.weighting import WeightingError
from metarun.weighting.agreement import agreement
from metarun.weighting.loss_softmax import loss_softmax
from metarun.weighting.uniform import uniform


def tree(rows: list[list[float]]) -> dict:
    """Split each task's vector over two leaves, as a real model's parameters are."""
    t = torch.tensor(rows, dtype=torch.float64)
    return {"a": t[:, :1], "b": t[:, 1:].reshape(len(rows), -1, 1)}


def test_hand_computed_three_aligned_one_opposed():
    g = tree([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    # sum_j g_j = (2, 0); s = (2, 2, 2, -2); sum |s| = 8.
    w = agreement(g)
    torch.testing.assert_close(w, torch.tensor([0.25, 0.25, 0.25, -0.25], dtype=torch.float64))
    assert w[3] < 0
    assert w.abs().sum().item() == pytest.approx(1.0)


def test_unequal_case_by_gram_matrix():
    rows = [[1.0, 2.0], [0.5, -1.0], [3.0, 0.0]]
    g = torch.tensor(rows, dtype=torch.float64)
    s = (g @ g.T).sum(dim=1)
    torch.testing.assert_close(agreement(tree(rows)), s / s.abs().sum())


def test_invariant_to_task_order_and_scale():
    torch.manual_seed(0)
    rows = torch.randn(6, 5, dtype=torch.float64)
    w = agreement(tree(rows.tolist()))
    perm = torch.randperm(6)
    torch.testing.assert_close(agreement(tree(rows[perm].tolist())), w[perm])
    torch.testing.assert_close(agreement(tree((7.5 * rows).tolist())), w)


def test_all_zero_updates_are_an_error_not_uniform():
    # 0/0: results labelled agreement must not quietly be uniform-weighted.
    with pytest.raises(WeightingError, match=r"meta-batch of 4 tasks: every task's vector is exactly zero.*"
                                             r"`weighting=uniform`"):
        agreement(tree([[0.0, 0.0]] * 4))
    with pytest.raises(WeightingError, match="sum to exactly zero"):
        agreement(tree([[1.0, 2.0], [-1.0, -2.0]]))  # s = (0, 0): opposed tasks cancel
    one_zero = agreement(tree([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0]]))  # defined: the zero task weighs 0
    torch.testing.assert_close(one_zero, torch.tensor([0.0, 0.5, 0.5], dtype=torch.float64))


def test_one_task_or_identical_tasks_equal_uniform():
    torch.testing.assert_close(agreement(tree([[0.3, -2.0]])), uniform(tree([[0.3, -2.0]])))
    same = tree([[0.3, -2.0, 1.0]] * 5)
    torch.testing.assert_close(agreement(same), uniform(same))


def test_uniform_is_one_over_t_on_the_gradients_device_and_dtype():
    g = tree([[1.0, 2.0]] * 4)
    torch.testing.assert_close(uniform(g), torch.full((4,), 0.25, dtype=torch.float64))


def test_loss_softmax_by_hand():
    losses = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    e = torch.tensor([1.0, 2.718281828459045, 7.38905609893065], dtype=torch.float64)
    torch.testing.assert_close(loss_softmax(losses, 1.0), e / e.sum())
    # tau = 2 halves the exponents: weights e^(L/2) / sum; the hardest task weighs most, and they sum to 1.
    half = torch.exp(losses / 2)
    torch.testing.assert_close(loss_softmax(losses, 2.0), half / half.sum())
    # A large temperature is uniform weighting; a shift of every loss changes nothing.
    torch.testing.assert_close(loss_softmax(losses, 1e9), torch.full((3,), 1 / 3, dtype=torch.float64))
    torch.testing.assert_close(loss_softmax(losses + 5.0, 1.0), loss_softmax(losses, 1.0))


def test_loss_softmax_weights_are_constants_of_the_outer_step():
    losses = torch.tensor([0.5, 1.5], requires_grad=True)
    assert not loss_softmax(losses, 1.0).requires_grad
