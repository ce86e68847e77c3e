"""The N-way K-shot Q-query sampler over a class tensor."""

from __future__ import annotations

import pytest
import torch

from metarun.tasks import ClassEpisodes

CLASSES, PER_CLASS = 12, 9


def labelled_images() -> torch.Tensor:
    """Image (c, i) carries c and i in two pixels, so a sampled image says where it came from."""
    images = torch.zeros(CLASSES, PER_CLASS, 1, 2, 2, dtype=torch.uint8)
    images[:, :, 0, 0, 0] = torch.arange(CLASSES)[:, None]
    images[:, :, 0, 0, 1] = torch.arange(PER_CLASS)[None, :]
    return images


def origin(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ids = (x[..., 0, 0, :2] * 255).round().long()
    return ids[..., 0], ids[..., 1]


def test_episodes_have_distinct_classes_and_disjoint_images():
    ways, shots, queries, tasks = 5, 2, 3, 40
    episode = ClassEpisodes(labelled_images()).sample(tasks, ways, shots, queries, torch.Generator().manual_seed(0))
    sx, sy, qx, qy = episode
    assert sx.shape == (tasks, ways * shots, 1, 2, 2) and qx.shape == (tasks, ways * queries, 1, 2, 2)
    assert sx.dtype == torch.float32 and 0 <= sx.min() and sx.max() <= 1
    assert torch.equal(sy, torch.arange(ways).repeat_interleave(shots).expand(tasks, -1))
    assert torch.equal(qy, torch.arange(ways).repeat_interleave(queries).expand(tasks, -1))
    s_class, s_image = origin(sx)
    q_class, q_image = origin(qx)
    for t in range(tasks):
        label_class = {}
        for classes, labels in ((s_class[t], sy[t]), (q_class[t], qy[t])):
            for c, label in zip(classes.tolist(), labels.tolist(), strict=True):
                assert label_class.setdefault(label, c) == c  # one class per label, support and query alike
        assert len(set(label_class.values())) == ways  # N distinct classes
        for label, c in label_class.items():
            used = s_image[t][sy[t] == label].tolist() + q_image[t][qy[t] == label].tolist()
            assert len(used) == shots + queries and len(set(used)) == shots + queries  # K+Q distinct: disjoint
            assert (s_class[t][sy[t] == label] == c).all()


def test_labels_are_permuted_per_task():
    episode = ClassEpisodes(labelled_images()).sample(200, 5, 1, 1, torch.Generator().manual_seed(1))
    s_class, _ = origin(episode.support_x)
    # Class 0, whenever drawn, is not always given the same label, and label 0 is not always the smallest class.
    labels_of_class_0 = {label for t in range(200) for label, c in enumerate(s_class[t].tolist()) if c == 0}
    assert len(labels_of_class_0) == 5
    assert not all(s_class[t, 0] == s_class[t].min() for t in range(200))


def test_same_seed_same_episodes():
    source = ClassEpisodes(labelled_images())
    a = source.sample(8, 5, 1, 4, torch.Generator().manual_seed(7))
    b = source.sample(8, 5, 1, 4, torch.Generator().manual_seed(7))
    c = source.sample(8, 5, 1, 4, torch.Generator().manual_seed(8))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a.support_x, c.support_x)


def test_impossible_requests_are_refused():
    source = ClassEpisodes(labelled_images())
    with pytest.raises(ValueError, match="cannot draw"):
        source.sample(1, CLASSES + 1, 1, 1, torch.Generator())
    with pytest.raises(ValueError, match="cannot draw"):
        source.sample(1, 5, 5, PER_CLASS - 4, torch.Generator())
