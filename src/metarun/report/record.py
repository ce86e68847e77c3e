"""The fields of a run's record (results.json, and the rows `load_runs` makes of run folders), declared once.

Each field says what it is, which decides how every reader treats it:
- a **setting** changes what a run computes: runs that differ in one are different runs, named by it in tables;
- the **stream** is the test tasks: runs compared task by task must agree on every stream field;
- a **measurement** is what a run found or how it ran (scores, times, the device): never a reason to name runs apart;
- **identity** says which run and where its files are.
`source` is the config key the field records, where there is one (tables name runs by it, and a folder's
results.json must agree with its `.hydra/config.yaml` on it), else what computes it. A field a user's dataset or
weighting adds through its `record()` and that is not declared here counts as a setting.

Adding a field to results.json: one `Field` here, and the code that computes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["setting", "stream", "measurement", "identity"]


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind
    source: str  # the config key it records (dotted), or, in words, what computes it
    required: bool = False  # every results.json of format 1 has it: `read_results` refuses a record without it
    # The record holds the config's value as it is (so a folder's results.json must agree with its config);
    # False where it holds what the value resolved to (`weighting.vectors=auto` recorded as `updates`).
    verbatim: bool = True

    @property
    def config_key(self) -> str | None:
        """The config key this field records, if it is one (words are not)."""
        return None if " " in self.source else self.source


def _splits(pattern: str, kind: Kind, source: str) -> tuple[Field, ...]:
    # Image datasets record their class and image counts per split (`SPLITS` of metarun.data.classification,
    # with Omniglot's trainval); the test split's are the stream, the others settings.
    return tuple(Field(pattern.format(s), "stream" if s == "test" else kind, source.format(s))
                 for s in ("train", "trainval", "val", "test"))


FIELDS: tuple[Field, ...] = (
    # identity
    Field("format", "identity", "the results format number", required=False),
    Field("metarun", "identity", "metarun's version"),
    Field("torch", "identity", "torch's version"),
    Field("commit", "identity", "the git commit of the code that tested the run (run.provenance)"),
    Field("uncommitted_changes", "identity", "whether that checkout's tracked files differed from the commit"),
    Field("trained_commits", "identity", "the commits the run was trained on, one per change of code at a resume"),
    Field("run_dir", "identity", "the folder the run was read from (tables only)"),
    Field("scores_file", "identity", "the per-task scores' file name"),
    Field("evaluation_of", "identity", "the run metarun-eval tested"),
    Field("checkpoint", "identity", "the checkpoint metarun-eval tested"),
    Field("root", "identity", "the image folder of data=folder"),
    Field("forms", "identity", "the files miniImageNet was read from"),
    # the test stream
    Field("data", "stream", "data.name", required=True),
    Field("ways", "stream", "ways", required=True),
    Field("shots", "stream", "shots", required=True),
    Field("queries", "stream", "queries"),
    Field("eval_seed", "stream", "eval.seed"),
    Field("n_tasks", "stream", "eval.tasks"),
    Field("amplitude", "stream", "data.amplitude"),
    Field("phase", "stream", "data.phase"),
    Field("x_range", "stream", "data.x_range"),
    Field("rotate_test", "stream", "data.rotate_test"),
    Field("image_size", "stream", "data.image_size"),
    Field("split", "stream", "data.split"),
    *_splits("{}_classes", "setting", "the {} split's classes"),
    *_splits("{}_images", "setting", "the {} split's images"),
    # settings
    Field("algo", "setting", "algo.name", required=True),
    Field("weighting", "setting", "weighting.name", required=True),
    Field("seed", "setting", "seed", required=True),
    Field("train_shots", "setting", "train.shots"),
    Field("train_queries", "setting", "train.queries"),
    Field("model", "setting", "the model's class name"),
    Field("model_settings", "setting", "the model's own keys"),
    Field("iterations", "setting", "train.iterations"),
    Field("meta_batch", "setting", "train.meta_batch"),
    Field("inner_steps", "setting", "inner.steps"),
    Field("inner_lr", "setting", "inner.lr"),
    Field("eval_steps", "setting", "eval.steps"),
    Field("eval_lr", "setting", "eval.lr"),
    Field("select", "setting", "eval.select"),
    Field("head", "setting", "eval.head"),
    Field("bn_mode", "setting", "the model's BatchNorm at test time (eval.transductive)"),
    Field("weighting_vectors", "setting", "weighting.vectors", verbatim=False),
    Field("weighting_temperature", "setting", "weighting.temperature"),
    Field("train_split", "setting", "data.train_split"),
    Field("split_dir", "setting", "data.split_dir", verbatim=False),  # the folder as the loader expanded it
    Field("channels", "setting", "data.channels"),
    Field("layout", "setting", "the layout of data=folder's images"),
    Field("tf32", "setting", "exec.tf32 where the device has TF32"),
    Field("autocast", "setting", "exec.autocast"),
    # measurements, and how the run was executed
    Field("metric", "measurement", "the dataset's metric", required=True),
    Field("task_kind", "measurement", "the dataset's kind"),
    Field("higher_is_better", "measurement", "the metric's direction"),
    Field("mean", "measurement", "the mean over test tasks", required=True),
    Field("ci95", "measurement", "the 95% CI half-width over test tasks", required=True),
    Field("ci95_method", "measurement", "how ci95 was computed"),
    Field("mean_before", "measurement", "the mean before adaptation"),
    Field("ci95_before", "measurement", "its 95% CI half-width"),
    Field("val_mean", "measurement", "the last validation mean"),
    Field("tested_iteration", "measurement", "the iteration whose parameters were tested"),
    Field("tested_val_mean", "measurement", "their validation mean"),
    Field("checkpoint_iteration", "measurement", "the iteration of the checkpoint metarun-eval tested"),
    Field("seconds", "measurement", "wall time"),
    Field("train_seconds", "measurement", "wall time of training"),
    Field("resumed_from", "measurement", "the iteration a stopped run continued from"),
    Field("device", "measurement", "the device"),
    Field("exec_mode", "measurement", "exec.mode as resolved"),
    Field("exec_chunk", "measurement", "exec.chunk as resolved"),
    Field("exec_workers", "measurement", "retired: older records' worker count"),
    Field("world_size", "measurement", "the number of ranks"),
    Field("backend", "measurement", "the ranks' collective backend"),
    Field("status", "measurement", "finished, failed or missing (tables only)"),
    Field("error", "measurement", "why a job failed (tables only)"),
)
BY_NAME = {f.name: f for f in FIELDS}


def kind(name: str) -> Kind:
    """A field's kind; an undeclared one (a user's dataset's own record) is a setting."""
    field = BY_NAME.get(name)
    return "setting" if field is None else field.kind


def names(*kinds: Kind) -> tuple[str, ...]:
    """The declared fields of these kinds, in declaration order."""
    return tuple(f.name for f in FIELDS if f.kind in kinds)


def required() -> tuple[str, ...]:
    return tuple(f.name for f in FIELDS if f.required)


def describes_the_run(name: str) -> bool:
    """Whether a field tells runs apart (a setting or the stream), not what they measured or where they are."""
    return kind(name) in ("setting", "stream")


def config_keys(*kinds: Kind) -> dict[str, str]:
    """field -> the config key whose value it holds as it is, for the declared fields of these kinds."""
    return {f.name: f.config_key for f in FIELDS if f.kind in kinds and f.config_key is not None and f.verbatim}
