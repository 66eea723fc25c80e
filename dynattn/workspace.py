"""Scratch memory for the B mixed kernels of kernel mixing in inference: one buffer per thread, reused.

Kernel mixing writes B mixed kernels (B x out x in/groups x kernel values) on every call, then the conv
reads them once. In a network's last stages these are tens of megabytes per call. The system allocator
(glibc's malloc) serves blocks that large by ``mmap`` and returns them to the operating system when they
are freed, so every call page-faults the whole block in again, zeroed, before writing it: in a plain
process that cost more than the mixing itself. Where nothing records a backward, the kernels are
written into a buffer this thread keeps instead; they are consumed before the call returns, so one
buffer serves every layer.

- One buffer per thread (``threading.local``): threads calling one model at once never share one.
- CPU only: CUDA's caching allocator already reuses its blocks.
- Plain tensors only, sizes known: not under torch.compile, tracing or export, nor for a backward.
- At most :data:`MAX_BYTES` per thread: kernel mixing runs a larger batch in chunks of samples.
"""

from __future__ import annotations

import threading

import torch

__all__ = ["MAX_BYTES", "usable", "scratch", "release"]

#: The most one thread's buffer holds (bytes of mixed kernels per chunk of samples).
MAX_BYTES = 128 * 2**20

_local = threading.local()


def usable(*tensors: torch.Tensor | None) -> bool:
    """Whether mixed kernels computed from ``tensors`` may go to this thread's buffer: plain CPU tensors
    (no fake, functional or traced ones), nothing that autograd records, not under torch.compile or jit."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    grad = torch.is_grad_enabled()
    for t in tensors:
        if t is None:
            continue
        if type(t) is not torch.Tensor and type(t) is not torch.nn.Parameter:
            return False
        if t.device.type != "cpu" or (grad and t.requires_grad):
            return False
    return True


def scratch(numel: int, like: torch.Tensor) -> torch.Tensor:
    """A 1-D tensor of ``numel`` values of ``like``'s dtype from this thread's buffer (valid until this thread's
    next call). A buffer made under ``torch.inference_mode`` is kept apart from one made outside it."""
    key = (like.dtype, torch.is_inference_mode_enabled())
    buffers = _local.__dict__.setdefault("buffers", {})
    buf = buffers.get(key)
    if buf is None or buf.numel() < numel:
        buffers[key] = None  # free the old buffer before allocating its successor
        buf = buffers[key] = torch.empty(numel, dtype=like.dtype)
    return buf[:numel]


def release() -> None:
    """Free this thread's buffers (they are made again at the next inference call that needs one)."""
    _local.__dict__.pop("buffers", None)
