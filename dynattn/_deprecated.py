"""Names that moved: reachable from their old place, with one ``DeprecationWarning`` per name.

A package's module-level ``__getattr__`` calls :func:`moved_attribute` for a name it no longer defines.
"""

from __future__ import annotations

import importlib
import warnings

__all__ = ["moved_attribute"]

_warned: set[str] = set()


def moved_attribute(package: str, name: str, module: str, attribute: str | None) -> object:
    """``module.attribute`` (the module itself where ``attribute`` is None), warning once that
    ``package.name`` moved there."""
    target = importlib.import_module(module)
    value = target if attribute is None else getattr(target, attribute)
    old = f"{package}.{name}"
    if old not in _warned:
        _warned.add(old)
        new = module if attribute is None else f"{module}.{attribute}"
        warnings.warn(f"{old} moved to {new}; import it from there ({old} will be removed in a later release)",
                      DeprecationWarning, stacklevel=3)
    return value
