"""metarun: config-driven gradient-based meta-learning experiments."""

from typing import Any

from metarun.version import __version__

__all__ = ["__version__", "load"]


def __getattr__(name: str) -> Any:
    # `metarun.load` imports torch on first use only: the commands that import this package stay fast.
    if name == "load":
        from metarun.run.learner import load

        return load
    raise AttributeError(f"module 'metarun' has no attribute {name!r}")
