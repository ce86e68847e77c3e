"""Test a finished run's parameters under another test setting, no training (`metarun-eval`).

The run's own config is the base and the evaluation's overrides change only its test setting; an evaluation
writes RUN_DIR/eval/<overrides>/ (results.json, scores.csv), read like any run's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from metarun.config.schema import ConfigError

GROUPS = ("data", "model", "algo", "weighting")
# Settings of what was trained: changing them would test another model than the one the run trained.
TRAINED = ("model", "algo", "weighting", "inner", "outer", "train", "seed")
HEAD = ("last", "zero")
EVALUATION_ONLY = ("eval.head", "eval.select")  # settings a run's config may predate


def finished_run(folder: Path) -> Path:
    """The run folder, if it holds a finished run metarun-eval can start from."""
    from metarun.report.results import RESULTS

    folder = folder.absolute()
    if not (folder / ".hydra" / "config.yaml").is_file():
        raise ConfigError(f"{folder} is not a metarun run folder (it has no .hydra/config.yaml). Pass the folder of a "
                          "finished run, e.g. outputs/runs/DATE/TIME or one job folder of a multirun.")
    if not (folder / RESULTS).is_file():
        raise ConfigError(f"{folder} holds a run that has not finished (no {RESULTS}), so it has no final parameters "
                          f"to test. Finish it first (`metarun --resume {folder}`), then evaluate it.")
    return folder


def hydra_argv(argv: list[str], saved: DictConfig) -> list[str]:
    """The overrides, after refusing the ones an evaluation of the run's model cannot take; the evaluation's
    own settings are added to the config of a run that predates them."""
    out = []
    for arg in argv:
        key = arg.partition("=")[0].lstrip("+~")
        if "=" in arg and key in GROUPS:
            raise ConfigError(
                f"`{arg}` chooses a config group, but metarun-eval tests the model the run trained, with the run's "
                f"own config as the base, so its {key} cannot be swapped for another group's. Set the keys of the "
                f"run's own `{key}` instead (e.g. `data.rotate_test=false`), or train a run with `{arg}`.")
        if "=" in arg and key.partition(".")[0] in TRAINED:
            raise ConfigError(
                f"`{arg}` changes how the model was trained ({key}); metarun-eval tests the parameters the run "
                "already trained, so it can change only the test setting: `ways`, `shots`, `queries`, `eval.*`, "
                "`data.*` settings that keep the input shape, `device`, `exec.*`. Train a new run to change "
                f"{key}.")
        missing = "=" in arg and key in EVALUATION_ONLY and OmegaConf.select(saved, key, default=None) is None
        out.append(f"+{arg}" if missing and not arg.startswith(("+", "~")) else arg)
    return out


def reevaluate(run_dir: Path, cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Test the run's parameters under `cfg` (the run's config with the evaluation's overrides) into `out_dir`;
    returns the results record (an identical evaluation already in `out_dir` is reported, not repeated)."""
    from metarun.config.checks import check
    from metarun.report.results import RESULTS, read_results
    from metarun.run import rundir

    cfg = pinned(cfg, OmegaConf.load(run_dir / ".hydra" / "config.yaml"))
    # An evaluation does not validate: whether `best` can be had is best.pt's to say, not eval.val_tasks'.
    check(OmegaConf.merge(cfg, {"eval": {"select": "last"}}))
    config = OmegaConf.to_container(cfg, resolve=True)
    if rundir.claim(out_dir, config, f"other overrides, or delete {out_dir}") is not None:
        return read_results(out_dir / RESULTS)
    return _test(run_dir, cfg, out_dir)


def _test(run_dir: Path, cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    from metarun.core import precision
    from metarun.core.tasks import fixed_stream
    from metarun.report.results import read_results, write_results, write_scores
    from metarun.run import provenance, rundir
    from metarun.run.build import build
    from metarun.run.evaluate import evaluate
    from metarun.run.learner import read_state
    from metarun.run.train import tested_record

    start = time.perf_counter()
    state, path = read_state(run_dir, cfg.eval.get("select"))
    trained = OmegaConf.create(state["config"])
    parts = build(cfg)
    take_parameters(parts, state, trained, cfg)
    tf32 = precision.use_tf32(cfg.exec.tf32, parts.device)
    stream = fixed_stream(parts.source, "test", cfg.eval.tasks, cfg.eval.chunk, cfg.ways, cfg.shots, cfg.queries,
                          cfg.eval.seed)
    after, before = (t.tolist() for t in evaluate(parts, stream, cfg.eval.steps, cfg.eval.lr))
    original = read_results(run_dir / "results.json")
    record = {**tested_record(cfg, parts, after, before, tf32, provenance.running_code()),
              "trained_commits": state.get("commits") or [], "evaluation_of": str(run_dir), "checkpoint": path.name,
              "checkpoint_iteration": int(state["iteration"]), "head": cfg.eval.get("head", "last"),
              "val_mean": state.get("val_mean"), "train_seconds": original.get("train_seconds"),
              "seconds": round(time.perf_counter() - start, 2)}
    rundir.accept(out_dir, cfg)
    write_scores(out_dir, after, before)
    write_results(out_dir, record)
    return record


def pinned(cfg: DictConfig, saved: DictConfig) -> DictConfig:
    """The evaluation's config with the trained settings as the run resolved them: `train.shots=${shots}` stays
    the trained number when the evaluation changes `shots`. A test setting that would change the model's
    shape (an image size through `data.*`) is refused; the number of classes is `take_parameters`'s to judge."""
    trained = OmegaConf.to_container(saved, resolve=True)
    now = OmegaConf.to_container(cfg, resolve=True)
    changed = [k for k in trained["model"] if k != "out_features" and now["model"].get(k) != trained["model"][k]]
    if changed:
        moves = ", ".join(f"model.{k}: {trained['model'][k]} -> {now['model'].get(k)}" for k in changed)
        raise ConfigError(
            f"this evaluation would change the trained model ({moves}), through a data setting it follows; "
            "metarun-eval tests the parameters the run trained, so the inputs must keep their shape. Drop the "
            "override that changes it.")
    for key in TRAINED:
        now[key] = trained[key]
    now["model"]["out_features"] = OmegaConf.to_container(cfg, resolve=True)["model"]["out_features"]
    return OmegaConf.create(now)


def take_parameters(parts: Any, state: dict[str, Any], trained: DictConfig, cfg: DictConfig) -> None:
    """Load the run's parameters into `parts` built for the evaluation's setting: a head of another number of
    classes is refused unless `eval.head=zero` starts every task's head at zero."""
    import torch

    head = cfg.eval.get("head", "last")
    if head not in HEAD:
        raise ConfigError(f"`eval.head={head}` is unknown. Use `eval.head=last` (the trained head) or `eval.head=zero`"
                          " (every task's head starts at zero, for another number of classes).")
    model = parts.model.state_dict()
    wrong = [k for k, v in state["params"].items() if k in model and model[k].shape != v.shape]
    if head == "last" and wrong:
        raise ConfigError(
            f"the run trained a {trained.ways}-way head ({', '.join(wrong)}: {list(state['params'][wrong[0]].shape)}), "
            f"which cannot give {cfg.ways}-way predictions. Evaluate with `ways={trained.ways}`, or add "
            "`eval.head=zero` to start every test task's head at zero and let the inner loop fit it (for "
            "algorithms whose inner loop adapts the head).")
    if head == "zero":
        _zero_head_possible(parts, state, cfg)
    params = {k: v for k, v in state["params"].items() if head == "last" or not k.startswith("head.")}
    parts.model.load_state_dict(params, strict=head == "last")
    with torch.no_grad():
        if head == "zero":
            for p in parts.model.head.parameters():
                p.zero_()
        for k, v in (state.get("meta_params") or {}).items():
            parts.meta[k].copy_(v)


def _zero_head_possible(parts: Any, state: dict[str, Any], cfg: DictConfig) -> None:
    algo = parts.algo
    if not algo.moves_parameters:
        raise ConfigError(f"`eval.head=zero` needs an inner loop that fits the head, but algo={algo.name} adapts only "
                          "its context vector: a zero head would predict nothing. Evaluate with the trained number "
                          "of classes and `eval.head=last`.")
    shaped = [k for k, v in (state.get("meta_params") or {}).items() if parts.meta[k].shape != v.shape]
    if shaped:
        raise ConfigError(f"algo={algo.name} learned meta-parameters shaped like the trained head "
                          f"({', '.join(shaped)}), which do not fit a {cfg.ways}-way head. Evaluate with the trained "
                          "number of classes.")
