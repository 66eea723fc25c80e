"""Blocked mixing in small blocks, so that the small test convs run as several blocks; kernel mixing in
the form a test asks for."""

import contextlib
import dataclasses

from dynattn import dynamic_conv, mixing


@contextlib.contextmanager
def small_blocks(channels):
    """Blocked mixing in blocks of ``channels`` output channels (whole groups where grouped), the last one
    narrower where ``channels`` does not divide the output channels."""
    saved = mixing.BLOCK_BYTES, mixing.MIN_BLOCK_CHANNELS
    mixing.BLOCK_BYTES, mixing.MIN_BLOCK_CHANNELS = 1, channels
    try:
        yield
    finally:
        mixing.BLOCK_BYTES, mixing.MIN_BLOCK_CHANNELS = saved


@contextlib.contextmanager
def columns_form(on):
    """Kernel and blocked mixing of every conv of one group (pointwise ones aside) as a matmul with the im2col
    columns when ``on``, as a conv of B groups when not, whatever the shape: cost models that make the one form
    free and the other dear (a new model is also a new key of each layer's memo of its choices)."""
    saved = dict(dynamic_conv.COST_MODELS)
    for threads, model in saved.items():
        dynamic_conv.COST_MODELS[threads] = (dataclasses.replace(model, im2col=0.0, kernel_mix=(1e6, 1e6)) if on
                                             else dataclasses.replace(model, im2col=1e12))
    try:
        yield
    finally:
        dynamic_conv.COST_MODELS.update(saved)
