"""The exceptions dynattn raises: one base, :class:`DynattnError` (a ``ValueError``), and one
subclass per kind of mistake, so a caller can catch them all or tell them apart.

- :class:`SpecError`: a spec field or a build argument is invalid (raised before anything is built);
- :class:`InputError`: a built module was called with an input it cannot take (rank, channels,
  batch statistics that do not exist);
- :class:`ModelError`: a model cannot take what a pass asks of it (it does not trace, has no 4-D
  feature maps, no site matches).

Every message names the field, the bad value and what is allowed; the same facts are attributes
for programs: ``field``, ``value`` and ``allowed``. Where a pass tried several things before giving
up, the first line says what failed and what to try, and ``details`` holds the attempts (else None).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

__all__ = ["DynattnError", "SpecError", "InputError", "ModelError", "close_match"]


class DynattnError(ValueError):
    """Base of every error dynattn and graph_passes raise for a caller's mistake."""

    #: The long story (every attempt, the underlying exceptions' full text), kept off the message.
    details: str | None = None

    def __init__(
        self,
        field: str,
        value: Any,
        problem: str,
        allowed: Iterable[Any] | str | None = None,
        *,
        hint: str | None = None,
    ) -> None:
        self.field = field
        self.value = value
        self.allowed: tuple[Any, ...] | str | None
        if allowed is None or isinstance(allowed, str):
            self.allowed = allowed
        else:
            self.allowed = tuple(allowed)
        message = f"{field}={value!r}: {problem}"
        if isinstance(self.allowed, tuple):
            message += "; allowed: " + ", ".join(repr(a) for a in self.allowed)
            close = close_match(value, self.allowed)
            if close is not None and hint is None:
                hint = f"did you mean {close!r}?"
        elif isinstance(self.allowed, str):
            message += f"; allowed: {self.allowed}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)

    def __reduce__(self):
        """Keep the structured fields through pickling (workers, DDP) and ``copy``: ``field``, ``value``, the
        message, ``details``, and ``allowed`` where it is plain data (strings, numbers); other attributes a
        pass sets (``node``, an fx node of a graph the other process does not have) are not kept."""
        state = {"details": self.details, "allowed": self.allowed if _plain(self.allowed) else None}
        return (_rebuild, (type(self), self.field, self.value, str(self)), state)


class SpecError(DynattnError):
    """A spec field or build argument is invalid."""


class InputError(DynattnError):
    """A built module was called with an input it cannot take."""


class ModelError(DynattnError):
    """A model cannot take what a pass asks of it."""


def _rebuild(cls: type[DynattnError], field: str, value: Any, message: str) -> DynattnError:
    err = cls.__new__(cls)
    ValueError.__init__(err, message)
    err.field, err.value, err.allowed = field, value, None
    return err


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    return isinstance(value, tuple) and all(_plain(v) for v in value)


def close_match(value: Any, allowed: Iterable[Any]) -> str | None:
    """The allowed string closest to ``value`` (a likely typo), or None."""
    if not isinstance(value, str):
        return None
    names = [a for a in allowed if isinstance(a, str)]
    matches = difflib.get_close_matches(value, names, n=1, cutoff=0.6)
    return matches[0] if matches else None
