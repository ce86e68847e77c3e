"""Task weightings: each one file here and one YAML in conf/weighting/, chosen with `_target_` like algorithms."""

from metarun.weighting.base import Weighting, WeightingError

__all__ = ["Weighting", "WeightingError"]
