"""A finished run's model from Python: `metarun.load(RUN_DIR)`, then adapt to a support set and predict.

No Hydra on the caller's side: the run's config comes from its checkpoint, and the parts are built by
`metarun.run.build`, as the run built them, so adapting here is the run's own test-time adaptation.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from metarun.core.tasks import Episode, fixed_stream
from metarun.run import checkpoint
from metarun.run.build import Parts, build
from metarun.run.evaluate import scores

SELECT = ("last", "best")


class LearnerError(ValueError):
    """A run folder that cannot be loaded, or inputs the loaded model cannot take; the message says why."""


def load(run_dir: str | Path, device: str | None = None, select: str | None = None) -> Learner:
    """The run's model, algorithm and settings, with the parameters it tested (`select=None`: the run's own
    `eval.select`), or those of its last checkpoint (`last`) or of its best validation (`best`).

    `device`: where to adapt and predict (`cpu`, `cuda`, `cuda:1`; default: the run's own `device`
    setting, `auto` taking a GPU when there is one)."""
    folder = Path(run_dir)
    state, path = read_state(folder, select)
    cfg = OmegaConf.create(state["config"])
    if device is not None:
        cfg.device = device
    return Learner(cfg, state, path)


def read_state(folder: Path, select: str | None = None) -> tuple[dict[str, Any], Path]:
    """The parameters a run folder holds for `select`, read onto the CPU, and the file they came from."""
    if not folder.is_dir():
        raise LearnerError(f"{folder} is not a folder. Pass the folder of a metarun run (it holds checkpoint.pt "
                           "and results.json; e.g. outputs/runs/DATE/TIME).")
    last = folder / checkpoint.FILENAME
    if not last.is_file():
        raise LearnerError(
            f"{folder} holds no {checkpoint.FILENAME}, so there are no trained parameters to load: it is not a "
            "metarun run's folder, or its run stopped before its first checkpoint (`train.checkpoint_every`). "
            "Pass the folder of a run that trained, or train one with `metarun ... hydra.run.dir=FOLDER`.")
    chosen = select or _run_select(last)
    if chosen not in SELECT:
        raise LearnerError(f"`select={chosen}` is unknown. Use `select='last'` (the last checkpoint), `'best'` "
                           "(the best validation's parameters, for runs with eval.select=best) or None (the run's "
                           "own choice).")
    path = last if chosen == "last" else folder / checkpoint.BEST
    if not path.is_file():
        raise LearnerError(
            f"{folder} holds no {path.name}: only runs trained with `eval.select=best` keep the parameters of "
            "their best validation. Load the last checkpoint (`select='last'`), or train with `eval.select=best`.")
    return _read(path), path


def _run_select(last: Path) -> str:
    saved = _read(last).get("config") or {}
    return (saved.get("eval") or {}).get("select", "last")


def _read(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        state["params"], state["config"]  # noqa: B018  a file without these is no metarun checkpoint
    except Exception as e:
        raise LearnerError(
            f"{path} cannot be read as a metarun checkpoint: it is cut short (a run killed while writing it leaves "
            f"the previous one whole, so this one was copied or damaged), or not a checkpoint at all (torch.load "
            f"said {type(e).__name__}: {str(e)[:120]}). Copy the run folder again from where it was written, or "
            "load another run.") from None
    written = int(state.get("format", 1))
    if written > checkpoint.FORMAT:
        raise LearnerError(
            f"{path} was written in checkpoint format {written} by a newer metarun; this one ({_version()}) reads "
            f"formats up to {checkpoint.FORMAT}. Upgrade metarun (`pip install -U metarun`) to load it.")
    return state


def _version() -> str:
    from metarun.version import __version__

    return __version__


class Learner:
    """A trained run's model and algorithm: `adapt` to a task's support set, then `predict` its queries;
    `evaluate` scores whole episodes as the run's test did."""

    def __init__(self, cfg: DictConfig, state: dict[str, Any], path: Path) -> None:
        self.cfg, self.checkpoint = cfg, path
        self.iteration = int(state["iteration"])
        self.parts: Parts = build(cfg, data=False)
        self.parts.load(state)
        self.ways = int(cfg.ways)
        self.steps, self.lr = int(cfg.eval.steps), float(cfg.eval.lr)
        self.image = "in_channels" in cfg.model
        self.example_shape = ((int(cfg.model.in_channels), int(cfg.model.image_size), int(cfg.model.image_size))
                              if self.image else (int(cfg.model.in_features),))

    @property
    def device(self) -> torch.device:
        return self.parts.device

    def adapt(self, support_x: Tensor, support_y: Tensor, steps: int | None = None,
              lr: float | None = None) -> Adapted:
        """The model adapted to one task's support set (`steps`, `lr`: the run's `eval.steps`, `eval.lr`)."""
        sx, sy = self._inputs(support_x, "support_x"), self._targets(support_y, len(support_x))
        return Adapted(self, sx, sy, self.steps if steps is None else steps, self.lr if lr is None else lr)

    def evaluate(self, episodes: Iterable[Episode], steps: int | None = None, lr: float | None = None) -> Tensor:
        """Per-task query scores (float64, on the CPU) after adaptation, over every task of `episodes`: the
        run's own test computation (same executor), so the run's test stream gives its scores.csv."""
        p = self.parts
        checked = (self._episode(Episode(*e)) for e in episodes)
        return scores(p.algo, p.theta(), p.objective, p.source.score, checked, self.steps if steps is None else steps,
                      self.lr if lr is None else lr, p.executor, p.world)[0]

    def test_stream(self, n_tasks: int | None = None) -> Iterator[Episode]:
        """The run's fixed test tasks (its first `n_tasks`, default all `eval.tasks`): loads its data."""
        cfg, source = self.cfg, self.parts.source
        source.setup(self.device, cfg.ways, (cfg.train.shots, cfg.train.queries), (cfg.shots, cfg.queries),
                     validate=False)
        return fixed_stream(source, "test", n_tasks or cfg.eval.tasks, cfg.eval.chunk, cfg.ways, cfg.shots,
                            cfg.queries, cfg.eval.seed)

    def prepare(self, images: Any, invert: bool = False) -> Tensor:
        """Images (a PIL image, a list of them, or a uint8 array [H, W], [N, H, W] or [N, H, W, C]) as this model
        takes them: float32 [N, C, S, S] in [0, 1] on its device, Lanczos-resized to its S x S. `invert=True`
        turns dark ink on light paper into the bright-on-dark strokes Omniglot's cache holds."""
        if not self.image:
            shape = ", ".join(map(str, self.example_shape))
            raise LearnerError(f"`prepare` makes images for an image model; this run's model "
                               f"({self.cfg.model._target_}) takes vectors of shape [N, {shape}].")
        from PIL import Image

        from metarun.data.images import MODES, resize

        channels, size = self.example_shape[0], self.example_shape[1]
        pictures = [_picture(i, Image) for i in (images if isinstance(images, Sequence) else _unstack(images))]
        arrays = np.stack([resize(p.convert(MODES[channels]), size).reshape(size, size, channels) for p in pictures])
        if invert:  # after resizing, in uint8, as the Omniglot cache inverts the archive's drawings
            arrays = 255 - arrays
        return torch.from_numpy(arrays).permute(0, 3, 1, 2).float().div_(255).to(self.device)

    def _inputs(self, x: Any, name: str) -> Tensor:
        shape = "[N, " + ", ".join(map(str, self.example_shape)) + "]"
        if not isinstance(x, Tensor) or x.dtype != torch.float32:
            what = type(x).__name__ if not isinstance(x, Tensor) else f"a {x.dtype} tensor"
            fix = " `learner.prepare(images)` makes them from PIL images or uint8 arrays." if self.image else ""
            raise LearnerError(f"`{name}` must be a float32 tensor of shape {shape}; got {what}.{fix}")
        if tuple(x.shape[1:]) != self.example_shape or x.dim() != len(self.example_shape) + 1 or len(x) == 0:
            raise LearnerError(f"`{name}` has shape {list(x.shape)}, but this model takes {shape} (N examples of "
                               f"the run's {'x'.join(map(str, self.example_shape))} inputs, N >= 1).")
        if self.image and (x.min() < 0 or x.max() > 1):
            raise LearnerError(f"`{name}` has values in [{x.min().item():.3g}, {x.max().item():.3g}], but the model "
                               "was trained on pixels in [0, 1] (uint8 / 255). Divide by 255, or use "
                               "`learner.prepare(images)`.")
        return x.to(self.device)

    def _targets(self, y: Any, n: int) -> Tensor:
        if self.parts.source.kind != "classification":
            if not isinstance(y, Tensor) or y.dtype != torch.float32 or tuple(y.shape) != (n, 1):
                raise LearnerError(f"`support_y` must be a float32 tensor of shape [{n}, 1] (one target per support "
                                   f"input); got {_describe(y)}.")
            return y.to(self.device)
        if (not isinstance(y, Tensor) or y.dtype not in (torch.int64, torch.int32) or tuple(y.shape) != (n,)
                or y.min() < 0 or y.max() >= self.ways):
            raise LearnerError(
                f"`support_y` must be an integer tensor of {n} labels (one per support image) in 0..{self.ways - 1}: "
                f"this model was trained on {self.ways}-way tasks, so a task's classes are numbered 0 to "
                f"{self.ways - 1}; got {_describe(y)}.")
        return y.long().to(self.device)

    def _episode(self, e: Episode) -> Episode:
        if e.support_x.dim() != len(self.example_shape) + 2 or tuple(e.support_x.shape[2:]) != self.example_shape:
            raise LearnerError(f"an episode's support_x has shape {list(e.support_x.shape)}; this model takes "
                               f"[tasks, N, {', '.join(map(str, self.example_shape))}].")
        return e


def _describe(y: Any) -> str:
    if not isinstance(y, Tensor):
        return type(y).__name__
    extra = f", values {y.min().item():g} to {y.max().item():g}" if y.numel() else ""
    return f"a {y.dtype} tensor of shape {list(y.shape)}{extra}"


def _unstack(images: Any) -> list[Any]:
    array = np.asarray(images)
    return list(array) if array.ndim in (3, 4) and not (array.ndim == 3 and array.shape[-1] in (3, 4)) else [array]


def _picture(image: Any, pil: Any) -> Any:
    if isinstance(image, pil.Image):
        return image
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise LearnerError(f"`prepare` takes PIL images or uint8 arrays [H, W] or [H, W, C]; got an array of "
                           f"dtype {array.dtype} and shape {list(array.shape)}. Convert with "
                           "`(array * 255).astype(numpy.uint8)` for pixels in [0, 1].")
    return pil.fromarray(array)


class Adapted:
    """The model adapted to one support set: `predict` the query inputs of the same task."""

    def __init__(self, learner: Learner, sx: Tensor, sy: Tensor, steps: int, lr: float) -> None:
        self.learner, self.sx, self.sy, self.steps, self.lr = learner, sx, sy, steps, lr

    def predict(self, query_x: Tensor) -> Tensor:
        """Logits [Q, N] (classification) or predictions [Q, 1] (regression) for the query inputs.

        The algorithm's own test-time step (`algo.predict`): CAVIA adapts its context, the convex methods their
        head, the others their parameters; BatchNorm takes the statistics the run tested with
        (`eval.transductive`)."""
        qx = self.learner._inputs(query_x, "query_x")
        p = self.learner.parts
        return p.algo.predict(p.theta(), p.objective, self.sx, self.sy, qx, self.steps, self.lr).detach()
