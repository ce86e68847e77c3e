"""Meta-training learns: after a few hundred iterations on sine, adapted query MSE drops well below the
untrained model's on the same held-out tasks."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from metarun.config.store import config_dir, register
from metarun.core.tasks import fixed_stream
from metarun.run.build import build
from metarun.run.evaluate import evaluate
from metarun.run.train import run

register()


@pytest.mark.slow
@pytest.mark.parametrize(("algo", "iterations"), [("maml", 400), ("reptile", 600)])
def test_meta_training_beats_the_untrained_model(tmp_path, algo, iterations):
    overrides = [f"algo={algo}", f"train.iterations={iterations}", "train.meta_batch=10", "train.eval_every=0",
                 "eval.tasks=200", "eval.val_tasks=0", "device=cpu"]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=overrides)

    parts = build(cfg)  # the same initialisation the run starts from
    stream = fixed_stream(parts.source, "test", cfg.eval.tasks, cfg.eval.chunk, cfg.ways, cfg.shots, cfg.queries,
                          cfg.eval.seed)
    untrained = evaluate(parts, stream, cfg.eval.steps, cfg.eval.lr)[0].mean().item()

    record, _ = run(cfg, tmp_path)
    assert record["n_tasks"] == 200
    assert record["mean"] < 0.6 * untrained, (record["mean"], untrained)
