"""The version of metarun, in a module of its own: importing it imports nothing else of the package."""

__version__ = "0.1.0"
