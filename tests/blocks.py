"""Blocked mixing in small blocks, so that the small test convs run as several blocks."""

import contextlib

from dynattn import mixing


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
