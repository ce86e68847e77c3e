"""One file per algorithm; each yields DESIGN.md's per-task `TaskGrads`."""

from metarun.algorithms.base import Algorithm, TaskGrads

__all__ = ["Algorithm", "TaskGrads"]
