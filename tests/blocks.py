"""Blocked mixing in small blocks, so that the small test convs run as several blocks; kernel mixing in
the form a test asks for. Both put a cost model in force for the current thread (``use_cost_model``), built
from the one already in force, so that they nest."""

import contextlib
import dataclasses

from dynattn.dynamic_conv import cost_model, use_cost_model


@contextlib.contextmanager
def small_blocks(channels):
    """Blocked mixing in blocks of ``channels`` output channels (whole groups where grouped), the last one
    narrower where ``channels`` does not divide the output channels."""
    with use_cost_model(dataclasses.replace(cost_model(), block_bytes=1, min_block_channels=channels)):
        yield


@contextlib.contextmanager
def columns_form(on):
    """Kernel, blocked and output mixing of every conv of one group (pointwise ones aside) as a matmul with the im2col
    columns when ``on``, as a conv of B groups when not, whatever the shape: a cost model that makes the one form
    free and the other dear (a new model is also a new key of each layer's memo of its choices)."""
    model = cost_model()
    with use_cost_model(dataclasses.replace(model, im2col=0.0, kernel_mix=(1e6, 1e6)) if on
                        else dataclasses.replace(model, im2col=1e12)):
        yield
