"""Kernel mixing's scratch buffer (dynattn.workspace): in inference the B mixed kernels go to one buffer per
thread, reused across calls and layers, in chunks of samples where a batch's kernels exceed it; outputs equal the
out-of-place computation in every strategy and form, gradients are untouched, threads never share a buffer."""

import concurrent.futures

import pytest
import torch

from dynattn import AttnSpec, DynamicConv2d, workspace
from tests.blocks import columns_form, small_blocks

SPECS = {"dyconv": AttnSpec.dyconv(), "odconv": AttnSpec.odconv(), "condconv": AttnSpec.condconv()}


def _layer(spec, cin=16, cout=24, k=3, groups=1, strategy="kernel"):
    torch.manual_seed(0)
    layer = DynamicConv2d(cin, cout, k, padding=k // 2, groups=groups, spec=spec.with_init("identity"),
                          strategy=strategy).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return layer


def _reference(layer, x):
    """The same call with autograd recording (the scratch buffer is never used there)."""
    with torch.enable_grad():
        return layer(x.clone().requires_grad_()).detach()


@pytest.mark.parametrize("spec", list(SPECS))
@pytest.mark.parametrize("strategy", ["kernel", "blocked"])
@pytest.mark.parametrize("columns", [False, True], ids=["conv", "columns"])
@pytest.mark.parametrize("groups", [1, 4])
def test_inference_through_the_buffer_equals_the_recorded_call(spec, strategy, columns, groups):
    layer = _layer(SPECS[spec], groups=groups, strategy=strategy)
    x = torch.randn(3, 16, 7, 6)
    with columns_form(columns), small_blocks(8):
        want = _reference(layer, x)
        with torch.no_grad():
            got = [layer(x) for _ in range(2)]  # the second call reuses the buffer the first wrote
        with torch.inference_mode():
            got.append(layer(x))
    for out in got:
        torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)


def test_the_buffer_is_reused_and_threads_keep_their_own():
    layer = _layer(AttnSpec.odconv())
    x = torch.randn(2, 16, 5, 5)
    workspace.release()
    with torch.no_grad():
        layer(x)
        first = workspace.scratch(1, layer.weight).data_ptr()
        layer(x)
        assert workspace.scratch(1, layer.weight).data_ptr() == first  # no new buffer per call

    def other_thread(_):
        with torch.no_grad():
            layer(x)
        return workspace.scratch(1, layer.weight).data_ptr()

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        assert first not in set(pool.map(other_thread, range(2)))


def test_a_batch_whose_kernels_exceed_the_buffer_runs_in_chunks_of_samples():
    # 512 x 512 x 3 x 3 float32 kernels are 9.4 MB a sample: 15 samples exceed MAX_BYTES (128 MiB)
    layer = _layer(AttnSpec.dyconv(), cin=512, cout=512, strategy="kernel")
    per_sample = layer.weight.numel() // layer.experts * layer.weight.element_size()
    batch = workspace.MAX_BYTES // per_sample + 2
    x = torch.randn(batch, 512, 2, 2)
    want = _reference(layer, x)
    with torch.no_grad():
        got = layer(x)
    assert workspace.scratch(1, layer.weight).untyped_storage().nbytes() <= workspace.MAX_BYTES
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_training_steps_never_touch_the_buffer():
    layer = _layer(AttnSpec.dyconv()).train()
    workspace.release()
    x = torch.randn(2, 16, 6, 6, requires_grad=True)
    layer(x).sum().backward()
    assert "buffers" not in workspace._local.__dict__
    assert not workspace.usable(x) and workspace.usable(x.detach())
