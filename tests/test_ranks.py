"""Feature attention on 1-D (B, C, L) and 3-D (B, C, D, H, W) maps: the same specs, built with
``spatial_dims=1`` or ``3`` (or by ``insert_attention`` from each site's map).

Equivalence, per rank, with weights copied in, train and eval mode, odd channel counts:
- SE against MONAI's ``ChannelSELayer`` (spatial_dims 1, 2, 3; also ``add_residual`` and another activation);
- CBAM, Triplet, GAM, coordinate attention and FcaNet against the papers' formulas written per rank in
  ``tests/reference/nd.py``;
- the attentions that see the positions only as a set (channel attentions: SE, ECA, eSE, SRM, global context;
  SimAM's per-map statistics) against their 2-D references on the same positions laid out as a 2-D map
  (a (B, C, D, H, W) map as (B, C, D * H, W), a (B, C, L) map as (B, C, L, 1)): their formula does not
  depend on the arrangement, so this is the formula applied to every position of the 1-D / 3-D map.
"""

import copy
import pickle

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from dynattn import AttnSpec, SpecError, build, get_spec
from dynattn.errors import InputError
from dynattn.presets import PRESETS
from dynattn.testing import specs
from dynattn.vocab import FEATURE_TARGETS
from tests.reference.eca import ECAReference
from tests.reference.ese import ESEReference
from tests.reference.gcnet import ContextBlockReference
from tests.reference.nd import CBAMNd, CoordAttNd, FcaNd, GAMNd, TripletNd
from tests.reference.se import SEReference
from tests.reference.simam import SimAMReference
from tests.reference.srm import SRMReference
from tests.weights import assert_equivalent

SHAPES = {1: (13,), 2: (11, 7), 3: (5, 7, 6)}
TOL = 1e-5
FEATURE_PRESETS = [name for name in PRESETS if get_spec(name).kind == "feature"]


def _check(ours, ref, mapping, channels, dims, *, view=None, randomize=False, shape=None):
    """``ours`` (built for ``dims``) equals ``ref`` after copying weights, in train and eval mode, and
    BatchNorm running statistics move alike. ``view`` maps the map to the layout ``ref`` takes."""
    assert_equivalent(ours, ref, mapping, (3, channels, *(shape or SHAPES[dims])), seed=channels + dims,
                      randomize=randomize, view=view, tol=TOL)


# ------------------------------------------------------------------ MONAI's ChannelSELayer
monai_se = pytest.importorskip("monai.networks.blocks.squeeze_and_excitation")


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("channels", [33, 64])
@pytest.mark.parametrize("variant", ["default", "residual", "leaky"])
def test_se_equals_monai_channel_se_layer(dims, channels, variant):
    """MONAI's SE: Linear C -> int(C / r) (bias) -> act -> Linear back (bias) -> sigmoid; ``add_residual``
    adds x (x * (1 + w): our ``fuse='mul_one_plus'``)."""
    kwargs = {"residual": {"add_residual": True}, "leaky": {"acti_type_1": "leakyrelu"}}.get(variant, {})
    ref = monai_se.ChannelSELayer(dims, channels, r=2, **kwargs)
    spec = AttnSpec.se(reduction=2)
    if variant == "residual":
        spec = spec.replace(fuse="mul_one_plus")
    if variant == "leaky":
        spec = spec.replace(act="leaky_relu")
    ours = build(spec, channels=channels, spatial_dims=dims)
    _check(ours, ref, {"fc.0.": "excite.fc1.", "fc.2.": "excite.fc2."}, channels, dims, randomize=True)


# ------------------------------------------------------------------ the papers' formulas per rank
@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("channels", [33, 64])
def test_cbam_per_rank(dims, channels):
    mapping = {"mlp.0.": "channel.excite.fc1.", "mlp.2.": "channel.excite.fc2.",
               "spatial.conv.": "spatial.excite.conv.", "spatial.bn.": "spatial.excite.bn."}
    _check(build(AttnSpec.cbam(), channels=channels, spatial_dims=dims), CBAMNd(dims, channels), mapping, channels,
           dims)


#: Triplet's branches by rank: one per swap of the channels with a spatial axis, then the plain one.
TRIPLET_BRANCHES = {1: ("c", "l"), 2: ("cw", "hc", "hw"), 3: ("chw", "dcw", "dhc", "dhw")}


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("channels", [5, 16])
def test_triplet_per_rank(dims, channels):
    ours = build(AttnSpec.triplet(), channels=channels, spatial_dims=dims)
    mapping = {f"gates.{i}.": f"{name}.excite." for i, name in enumerate(TRIPLET_BRANCHES[dims])}
    _check(ours, TripletNd(dims), mapping, channels, dims)


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("channels", [17, 32])
def test_gam_per_rank(dims, channels):
    mapping = {"channel_attention.0.": "channel.excite.fc1.", "channel_attention.2.": "channel.excite.fc2.",
               "spatial_attention.0.": "spatial.excite.conv1.", "spatial_attention.1.": "spatial.excite.bn1.",
               "spatial_attention.3.": "spatial.excite.conv2.", "spatial_attention.4.": "spatial.excite.bn2."}
    _check(build(AttnSpec.gam(), channels=channels, spatial_dims=dims), GAMNd(dims, channels), mapping, channels,
           dims)


COORD_AXES = {1: ("l",), 2: ("h", "w"), 3: ("d", "h", "w")}


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("channels", [33, 64])
def test_coord_per_rank(dims, channels):
    mapping = {"conv1.": "excite.fc1.", "bn1.": "excite.bn."}
    mapping.update({f"convs.{i}.": f"excite.fc_{a}." for i, a in enumerate(COORD_AXES[dims])})
    _check(build(AttnSpec.coord(), channels=channels, spatial_dims=dims), CoordAttNd(dims, channels), mapping,
           channels, dims, randomize=True)


@pytest.mark.parametrize("dims", [1, 3])
@pytest.mark.parametrize("shape", [None, "large"])
def test_fca_per_rank(dims, shape):
    """FcaNet's DCT components per rank; the "large" maps make the scaled frequencies (H // 7) > 1."""
    sizes = {1: (30,), 3: (3, 15, 14)}[dims] if shape else None
    _check(build(AttnSpec.fca(), channels=64, spatial_dims=dims), FcaNd(dims, 64), {"fc.0.": "excite.fc1.",
           "fc.2.": "excite.fc2."}, 64, dims, shape=sizes)


# ------------------------------------------------------------------ attentions of positions as a set
def _as_2d(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(-1) if x.dim() == 3 else x.flatten(2, 3)


SET_CASES = {
    "se": (lambda c: SEReference(c, reduction=16), AttnSpec.se(), {"fc1.": "excite.fc1.", "fc2.": "excite.fc2."}),
    "eca": (lambda c: ECAReference(c, k_size=None), AttnSpec.eca(), {"conv.": "excite.conv."}),
    "ese": (lambda c: ESEReference(c), AttnSpec.ese(), {"fc.": "excite."}),
    "srm": (lambda c: SRMReference(c), AttnSpec.srm(), {"cfc": "excite.weight", "bn.": "excite.bn."}),
    "simam": (lambda c: SimAMReference(), AttnSpec.simam(), {}),
}


@pytest.mark.parametrize("dims", [1, 3])
@pytest.mark.parametrize("name", list(SET_CASES))
def test_position_set_attentions_per_rank(dims, name):
    make_ref, spec, mapping = SET_CASES[name]
    _check(build(spec, channels=48, spatial_dims=dims), make_ref(48), mapping, 48, dims, view=_as_2d, randomize=True)


@pytest.mark.parametrize("dims", [1, 3])
def test_global_context_per_rank(dims):
    ref = ContextBlockReference(48, ratio=1 / 16)
    ours = build(AttnSpec.gc(), channels=48, spatial_dims=dims)
    mapping = {k: v for k, v in _gc_map().items()}
    _check(ours, ref, mapping, 48, dims, view=_as_2d, randomize=True)


def _gc_map() -> dict[str, str]:
    return {"conv_mask.": "pool_attn.conv.", "channel_add_conv.0.": "excite.fc1.",
            "channel_add_conv.1.": "excite.ln.", "channel_add_conv.3.": "excite.fc2."}


# ------------------------------------------------------------------ every preset, every rank
@pytest.mark.parametrize("dims", [1, 3])
@pytest.mark.parametrize("name", FEATURE_PRESETS)
def test_every_feature_preset_builds_per_rank(dims, name):
    """Each preset maps a (B, C, L) / (B, C, D, H, W) map to its shape with finite gradients, and with
    identity init returns x exactly."""
    x = torch.randn(2, 32, *SHAPES[dims], requires_grad=True)
    module = build(get_spec(name), channels=32, spatial_dims=dims)
    assert module.spatial_dims == dims
    y = module(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all()
    ident = build(get_spec(name, init="identity"), channels=32, spatial_dims=dims).eval()
    with torch.no_grad():
        torch.testing.assert_close(ident(x), x, atol=0, rtol=0)


@settings(deadline=None)
@given(spec=specs(FEATURE_TARGETS, min_channels=4), dims=st.sampled_from([1, 3]), channels=st.integers(4, 12),
       seed=st.integers(0, 2**16))
def test_any_spec_builds_per_rank(spec, dims, channels, seed):
    """Any valid spec builds on 1-D and 3-D maps, except 2-D-only rotations, which are refused by name."""
    torch.manual_seed(seed)
    try:
        module = build(spec, channels=channels, spatial_dims=dims)
    except SpecError as exc:
        assert exc.field == "AttnSpec.branches", exc
        assume(False)
    x = torch.randn(2, channels, *SHAPES[dims][:dims])
    y = module.eval()(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def _window_means(x, extent):
    """Gather-excite's gather from its definition: the mean of each window of 2e - 1 positions, stride e,
    starting e - 1 before the map, over the positions inside the map (every axis)."""
    k, s, p = 2 * extent - 1, extent, extent - 1
    ranges = [[range(max(0, o * s - p), min(n, o * s - p + k)) for o in range((n + 2 * p - k) // s + 1)]
              for n in x.shape[2:]]
    out = torch.empty(*x.shape[:2], *(len(r) for r in ranges), dtype=x.dtype)
    for i, rd in enumerate(ranges[0]):
        for j, rh in enumerate(ranges[1]):
            for m, rw in enumerate(ranges[2]):
                out[:, :, i, j, m] = x[:, :, rd][:, :, :, rh][:, :, :, :, rw].mean((2, 3, 4))
    return out


@pytest.mark.parametrize("shape", [(5, 7, 6), (9, 11, 10)])
def test_gather_over_an_extent_on_3d_maps_smaller_than_the_window(shape):
    """ATen's avg_pool3d refuses a map smaller than its kernel even where the padding covers it; the gather
    takes any map (drawn by test_any_spec_builds_per_rank: extent 4, a 5 x 7 x 6 map) and is the window mean."""
    from dynattn.compiler.ops import window_mean3d

    x = torch.randn(2, 3, *shape, dtype=torch.float64)
    for extent in (2, 4):
        k = 2 * extent - 1
        torch.testing.assert_close(window_mean3d(x, k, extent, extent - 1), _window_means(x, extent))
    module = build(AttnSpec(target="channel", pool=["avg"], excite="linear", extent=4), channels=3, spatial_dims=3)
    assert module(x.float()).shape == x.shape


# ------------------------------------------------------------------ errors, code, copies
def test_wrong_rank_input_names_the_layout_and_the_fix():
    module = build(AttnSpec.cbam(), channels=32, spatial_dims=3)
    with pytest.raises(InputError, match=r"takes a 5-D \(B, C, D, H, W\) feature map, got a 4-D tensor.*"
                                         r"spatial_dims=2"):
        module(torch.randn(2, 32, 6, 6))
    with pytest.raises(InputError, match=r"4-D \(B, C, H, W\).*spatial_dims=1"):
        build(AttnSpec.se(), channels=32)(torch.randn(2, 32, 9))


@pytest.mark.parametrize("dims", [0, 4, "3", True, 2.0])
def test_bad_spatial_dims_is_a_spec_error(dims):
    with pytest.raises(SpecError, match=r"spatial_dims=.*allowed: 1, 2, 3"):
        build(AttnSpec.se(), channels=32, spatial_dims=dims)


def test_two_d_only_rotation_is_refused_on_other_ranks():
    spec = AttnSpec.triplet().replace(branches=("b c h w -> b c w h",))
    build(spec, channels=8)  # fine in 2-D
    with pytest.raises(SpecError, match=r"AttnSpec.branches=.*no meaning on a map with 3 spatial dim"):
        build(spec, channels=8, spatial_dims=3)
    one_swap = AttnSpec.triplet().replace(branches=("b c h w -> b h c w",))
    with pytest.raises(SpecError, match="swaps of the channels with every spatial axis"):
        build(one_swap, channels=8, spatial_dims=1)


def test_three_d_code_reads_per_rank():
    code = build(AttnSpec.cbam(), channels=16, spatial_dims=3).code
    assert "'b c d h w -> b c'" in code and "'b c d h w -> b 1 d h w'" in code and "dims = 3" in code
    code1 = build(AttnSpec.se(), channels=16, spatial_dims=1).code
    assert "'b c l -> b c'" in code1 and "'b c -> b c 1'" in code1


@pytest.mark.parametrize("dims", [1, 3])
def test_copies_keep_the_rank(dims):
    module = build(AttnSpec.cbam(), channels=16, spatial_dims=dims)
    x = torch.randn(2, 16, *SHAPES[dims])
    for copied in (copy.deepcopy(module), pickle.loads(pickle.dumps(module))):
        assert copied.spatial_dims == dims and copied.code == module.code
        torch.testing.assert_close(copied(x), module(x))


def test_triplet_on_a_1d_map_by_hand():
    """On (B, C, L): the gate of the swapped branch is a k-wide conv along C on [max_L, mean_L]."""
    torch.manual_seed(0)
    module = build(AttnSpec.triplet(kernel_size=3), channels=6, spatial_dims=1).eval()
    x = torch.randn(2, 6, 10)
    conv_c, bn_c = module.c.excite.conv, module.c.excite.bn
    conv_l, bn_l = module.l.excite.conv, module.l.excite.bn
    z_c = torch.stack([x.amax(2), x.mean(2)], 1)  # (B, 2, C)
    g_c = torch.sigmoid(bn_c(conv_c(z_c))).transpose(1, 2)  # (B, C, 1)
    z_l = torch.stack([x.amax(1), x.mean(1)], 1)  # (B, 2, L)
    g_l = torch.sigmoid(bn_l(conv_l(z_l)))  # (B, 1, L)
    torch.testing.assert_close(module(x), x * (g_c + g_l) / 2)


def test_nn_sequential_1d_and_3d_models_take_built_modules():
    net1 = nn.Sequential(nn.Conv1d(3, 16, 3, padding=1), build(AttnSpec.cbam(), channels=16, spatial_dims=1))
    net3 = nn.Sequential(nn.Conv3d(3, 16, 3, padding=1), build(AttnSpec.eca(), channels=16, spatial_dims=3))
    assert net1(torch.randn(2, 3, 20)).shape == (2, 16, 20)
    assert net3(torch.randn(2, 3, 4, 6, 6)).shape == (2, 16, 4, 6, 6)
