"""metarun: config-driven gradient-based meta-learning experiments."""

__version__ = "0.1.0"
