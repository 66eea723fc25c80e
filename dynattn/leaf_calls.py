"""``leaf_call``: a function a host model's ``torch.fx.symbolic_trace`` records as one call.

Given an ``fx.Proxy`` as its first argument, the decorated function records itself with the arguments
it was called with, instead of running on the Proxy (einops cannot take one; the input checks would
trace their shape tests). This replaces ``torch.fx.wrap``, which fx writes into every generated
module's code and which registers each module's globals for good (a registry that grows with every
module built and slows every later trace).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch.fx as fx

__all__ = ["leaf_call"]

F = TypeVar("F", bound=Callable)


def leaf_call(fn: F) -> F:
    @functools.wraps(fn)
    def call(*args, **kwargs):
        if args and isinstance(args[0], fx.Proxy):
            return args[0].tracer.create_proxy("call_function", call, args, kwargs)
        return fn(*args, **kwargs)

    return call  # type: ignore[return-value]
