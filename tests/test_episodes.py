"""The N-way K-shot Q-query sampler over a class tensor."""

from __future__ import annotations

import pytest
import torch

from metarun.core.tasks import ClassEpisodes, RaggedClassEpisodes, class_episodes

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


# ---- classes of different sizes (data=folder) -------------------------------------------------------------------

COUNTS = [3, 9, 5, 12, 4, 7]


def ragged_images() -> tuple[torch.Tensor, list[int]]:
    """Image i of class c, stored one class after another, carries c and i in two pixels."""
    images = torch.zeros(sum(COUNTS), 1, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.tensor([c for c, n in enumerate(COUNTS) for _ in range(n)])
    images[:, 0, 0, 1] = torch.tensor([i for n in COUNTS for i in range(n)])
    return images, COUNTS


def test_ragged_episodes_take_distinct_images_of_each_class_and_only_images_it_has():
    ways, shots, queries, tasks = 4, 1, 2, 300
    episode = RaggedClassEpisodes(*ragged_images()).sample(tasks, ways, shots, queries,
                                                          torch.Generator().manual_seed(0))
    sx, sy, qx, qy = episode
    assert sx.shape == (tasks, ways * shots, 1, 2, 2) and qx.shape == (tasks, ways * queries, 1, 2, 2)
    assert torch.equal(qy, torch.arange(ways).repeat_interleave(queries).expand(tasks, -1))
    s_class, s_image = origin(sx)
    q_class, q_image = origin(qx)
    for t in range(tasks):
        drawn = {}
        for label in range(ways):
            (c,) = set(s_class[t][sy[t] == label].tolist() + q_class[t][qy[t] == label].tolist())
            used = s_image[t][sy[t] == label].tolist() + q_image[t][qy[t] == label].tolist()
            assert len(set(used)) == shots + queries and max(used) < COUNTS[c]  # distinct, within the class
            drawn[label] = c
        assert len(set(drawn.values())) == ways


def test_ragged_sampling_is_uniform_over_classes_and_over_each_class_images():
    tasks, ways, take = 4000, 3, 3
    episode = RaggedClassEpisodes(*ragged_images()).sample(tasks, ways, take, 0, torch.Generator().manual_seed(1))
    classes, images = (t.flatten() for t in origin(episode.support_x))
    # Counts within 4 standard deviations (binomial, sd < sqrt(mean)) of what uniform draws give.
    per_class = torch.bincount(classes, minlength=len(COUNTS)).float() / take
    expected = tasks * ways / len(COUNTS)  # every class equally likely, whatever its size
    assert ((per_class - expected).abs() < 4 * expected ** 0.5).all(), per_class
    for c, n in enumerate(COUNTS):
        seen = torch.bincount(images[classes == c], minlength=n).float()
        share = per_class[c] * take / n  # each of the class's images equally likely
        assert len(seen) == n and ((seen - share).abs() < 4 * share.sqrt()).all(), (c, seen)


def test_equal_sizes_take_the_fast_path_with_the_same_episodes():
    images = labelled_images()
    flat = class_episodes(images.flatten(0, 1), [PER_CLASS] * CLASSES)
    assert type(flat) is ClassEpisodes
    a = flat.sample(6, 5, 1, 3, torch.Generator().manual_seed(3))
    b = ClassEpisodes(images).sample(6, 5, 1, 3, torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert type(class_episodes(*ragged_images())) is RaggedClassEpisodes


def test_ragged_requests_beyond_the_smallest_class_are_refused():
    source = RaggedClassEpisodes(*ragged_images())
    assert source.per_class == 3 and source.classes == 6
    with pytest.raises(ValueError, match="cannot draw"):
        source.sample(1, 2, 2, 2, torch.Generator())
    with pytest.raises(ValueError, match="cannot draw"):
        source.sample(1, 7, 1, 1, torch.Generator())


@pytest.mark.parametrize("ragged", [False, True], ids=["equal", "ragged"])
def test_episodes_are_gathered_on_the_images_device(ragged):
    """On fake CUDA tensors (no GPU needed): the episode, labels included, lives where the images do."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True):
        if ragged:
            source = RaggedClassEpisodes(torch.empty(sum(COUNTS), 1, 2, 2, dtype=torch.uint8, device="cuda"), COUNTS)
        else:
            source = ClassEpisodes(torch.empty(CLASSES, PER_CLASS, 1, 2, 2, dtype=torch.uint8, device="cuda"))
        episode = source.sample(4, 3, 1, 2, torch.Generator().manual_seed(0))
        assert all(t.device.type == "cuda" for t in episode)
        assert episode.support_x.dtype == torch.float32 and episode.query_y.shape == (4, 6)
