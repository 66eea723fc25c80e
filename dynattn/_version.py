"""The library's version (one place: the package, the profile cache's keys and pyproject read it)."""

__version__ = "0.1.0"
