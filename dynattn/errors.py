"""The one exception type dynattn raises for a bad spec or a bad build argument."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

__all__ = ["SpecError"]


class SpecError(ValueError):
    """A spec field or build argument is invalid.

    The message names the field, the bad value and what is allowed; the same facts are
    available as attributes for programs: ``field``, ``value`` and ``allowed``.
    """

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
            close = _close_match(value, self.allowed)
            if close is not None and hint is None:
                hint = f"did you mean {close!r}?"
        elif isinstance(self.allowed, str):
            message += f"; allowed: {self.allowed}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)

    def __reduce__(self):  # keep the structured fields through pickling (workers, DDP)
        return (_rebuild, (self.field, self.value, str(self)))


def _rebuild(field: str, value: Any, message: str) -> SpecError:
    err = SpecError.__new__(SpecError)
    ValueError.__init__(err, message)
    err.field, err.value, err.allowed = field, value, None
    return err


def _close_match(value: Any, allowed: tuple[Any, ...]) -> str | None:
    if not isinstance(value, str):
        return None
    names = [a for a in allowed if isinstance(a, str)]
    matches = difflib.get_close_matches(value, names, n=1, cutoff=0.6)
    return matches[0] if matches else None
