"""The arithmetic of the cost model behind ``strategy="auto"``: a problem (:class:`ConvProblem`), the constants of a
machine (:class:`CostModel`), the modelled time of each mixing strategy (:func:`modelled_costs`), and the constants
fitted on this project's machine (:data:`COST_MODELS`), the deterministic fallback. Which constants are in force
(fitted, calibrated on this machine, or a user's) is :mod:`.cost_model`'s business."""

from __future__ import annotations

from dataclasses import dataclass

from .. import mixing

__all__ = ["ConvProblem", "CostModel", "COST_MODELS", "fitted_model", "modelled_costs", "kernel_form", "cheapest"]


@dataclass(frozen=True)
class ConvProblem:
    """One call of a dynamic conv as the cost model sees it (``_DynamicConvNd.conv_problem`` builds it from a
    layer and its input). For a 1-D or 3-D conv, ``kernel_area`` is the product of the kernel's sizes and
    ``out_positions`` / ``in_positions`` the products of the maps' spatial sizes."""

    in_per_group: int  #: input channels per conv group
    out_channels: int
    kernel_area: int  #: kh * kw (k; kd * kh * kw)
    experts: int  #: K, or 1 where the spec has no mixing head (the kernel varies only through its scalings)
    out_positions: int  #: H_out * W_out
    batch: int
    groups: int = 1
    training: bool = False  #: a backward follows the forward
    spatial_head: bool = False  #: ODConv's kernel-position scaling
    itemsize: int = 4  #: bytes per value
    in_positions: int | None = None  #: H * W; None: ``out_positions``
    pointwise: bool = False  #: a 1 x 1 conv of one group without padding (kernel mixing runs it as a batched matmul)

    @property
    def weights(self) -> int:
        """W, the weights of one expert: out * in/groups * kernel area."""
        return self.out_channels * self.in_per_group * self.kernel_area

    @property
    def column_values(self) -> int:
        """The values of the input's im2col columns: B * in * kernel area * out positions."""
        return self.batch * self.in_per_group * self.groups * self.kernel_area * self.out_positions


@dataclass(frozen=True)
class CostModel:
    """Constants of the cost model behind ``strategy="auto"`` for one device, dtype and thread count: measured on
    the machine it runs on (:func:`~dynattn.dynamic_conv.calibrate`) or the fitted fallback (:data:`COST_MODELS`).
    The multiply-add and byte rates are effective ones: what makes the modelled strategies order as the measured
    ones do, not a peak."""

    macs_per_s: float  #: a dense conv's multiply-adds per second
    bytes_per_s: float  #: reading and writing feature maps, bytes per second
    kernel_mix: tuple[float, float]  #: kernel mixing's extra cost per mixed weight, in multiply-adds (B = 1, B > 1)
    blocked_share: float  #: blocked mixing: the share of that extra cost left when a block stays in cache
    block_conv: float  #: blocked mixing: the convs of narrow blocks, relative to one conv of all channels
    expert_bytes_per_s: float  #: output mixing: reading (and reordering) the K expert kernels, bytes per second
    #: kernel mixing's extra cost per mixed weight of a pointwise conv (a batched matmul, no conv of B groups)
    pointwise_mix: tuple[float, float]
    #: blocked mixing of a pointwise conv: the matmuls of narrow blocks, relative to one of all channels
    pointwise_block: float
    #: kernel mixing of a conv of one group as a matmul with the input's im2col columns (``columns`` in
    #: :func:`mixing.kernel_mixing`): writing and reading the columns, in multiply-adds per column value
    im2col: float = 60.0
    call_s: float = 1.5e-5  #: a fixed cost per op call, seconds
    #: kernel mixing's extra cost in a training step, relative to inference: its backward writes the gradient of
    #: all B mixed kernels (blocked mixing's stays in cache, and the rest of a step costs 2x)
    train_mix: float = 2.0
    #: the columns form's extra cost in a training step, relative to the conv form's (its backward is a batched
    #: matmul for the B kernels' gradient and a col2im for the input's)
    train_columns: float = 1.0
    #: memory fresh from the operating system, bytes per second: an allocator hands a large block (over
    #: ``fresh_above`` bytes; glibc's malloc: by ``mmap``) back when it is freed, so a call that allocates one
    #: pays page faults on every byte of it every time (the B mixed kernels of a training step, large im2col
    #: columns, the K outputs of output mixing); a caching allocator (a GPU's, jemalloc) measures fast here
    fresh_bytes_per_s: float = 1e11
    fresh_above: int = 32 * 2**20  #: glibc's largest threshold for serving a block by mmap
    cache_bytes: int = 4 * 2**20  #: a block's mixed kernels stay in cache between being written and read
    #: blocked mixing's block size: the bytes of one block's B mixed kernels (:func:`mixing.block_channels`) ...
    block_bytes: int = mixing.BLOCK_BYTES
    #: ... but at least this many output channels per block
    min_block_channels: int = mixing.MIN_BLOCK_CHANNELS


#: The fallback when no calibration is wanted (``DYNATTN_COST_MODEL=fitted``: deterministic, what the test suite
#: uses): fitted on this project's machine (a 2-core AMD EPYC CPU, fp32, torch 2.14) to the timings of
#: ``python -m dynattn.bench.strategies`` at 1 and 2 threads; more threads use the last.
COST_MODELS: dict[int, CostModel] = {
    1: CostModel(macs_per_s=5.3e10, bytes_per_s=2e10, kernel_mix=(20.0, 45.0), blocked_share=0.75, block_conv=2.0,
                 expert_bytes_per_s=2e9, pointwise_mix=(20.0, 20.0), pointwise_block=1.2, im2col=60.0),
    2: CostModel(macs_per_s=3.8e11, bytes_per_s=5e9, kernel_mix=(10.0, 90.0), blocked_share=0.9, block_conv=2.1,
                 expert_bytes_per_s=3.5e9, pointwise_mix=(10.0, 20.0), pointwise_block=1.2, im2col=175.0),
}


def fitted_model(threads: int) -> CostModel:
    """The fitted constants for ``threads`` (the entry of the most threads not above it)."""
    return COST_MODELS[max(t for t in COST_MODELS if t <= max(1, threads))]


def modelled_costs(p: ConvProblem, m: CostModel, blocked: bool = True, columns: bool | None = None) -> dict[str, int]:
    """Modelled femtoseconds of each strategy (see :func:`~dynattn.dynamic_conv.strategy_costs`); kernel and
    blocked mixing in their cheaper form, or in the one ``columns`` forces. Integers on purpose: under
    ``torch.compile(dynamic=True)`` the sizes are symbolic, and comparing symbolic ints installs a guard
    that holds for every batch size with the same choice, where symbolic floats are specialised (one
    recompilation per batch size)."""
    mac, byte = round(1e15 / m.macs_per_s), round(1e15 / m.bytes_per_s)  # femtoseconds per unit
    call = round(1e15 * m.call_s)
    w, batch, itemsize = p.weights, p.batch, p.itemsize
    in_positions = p.out_positions if p.in_positions is None else p.in_positions
    conv = batch * p.out_positions * w * mac
    maps = batch * (p.in_per_group * p.groups * in_positions + p.out_channels * p.out_positions) * itemsize * byte
    compute, extra = (3, 2) if p.training else (1, 1)
    kernel_extra, as_columns = kernel_form(p, m, columns)
    mix = round(100 * m.train_mix) if p.training else 100  # percent
    fresh = _fresh_costs(p, m, as_columns)
    costs = {"kernel": compute * conv + extra * (maps + 3 * call) + mix * kernel_extra // 100 + fresh["kernel"]}
    shape = (p.experts, p.out_channels, p.in_per_group, p.kernel_area, 1)
    step = mixing.block_channels(batch, shape, p.groups, itemsize, block_bytes=m.block_bytes,
                                 min_channels=m.min_block_channels) if blocked else p.out_channels
    blocks = -(-p.out_channels // step)
    if blocks > 1:
        block_bytes = batch * step * p.in_per_group * p.kernel_area * itemsize
        share = round(100 * m.blocked_share) if block_bytes <= m.cache_bytes else 100  # percent
        narrow = m.pointwise_block if p.pointwise else m.block_conv
        costs["blocked"] = (compute * conv * round(100 * narrow) // 100 + extra * (maps + 3 * blocks * call)
                            + share * mix * kernel_extra // 10000 + fresh["columns"])
    outputs = 2 * p.experts * batch * p.out_channels * p.out_positions * itemsize * byte
    if p.spatial_head:  # the kernel-position scaling goes to an unfolded copy of the input
        outputs += 2 * p.column_values * itemsize * byte
    experts_read = p.experts * w * itemsize * round(1e15 / m.expert_bytes_per_s)
    costs["output"] = compute * p.experts * conv + extra * (maps + outputs + experts_read + 3 * call) + fresh["output"]
    if as_columns and p.kernel_area > 1 and not p.spatial_head:  # one matmul with the batch's im2col columns
        costs["output"] += _columns_cost(p, m, mac)
    return costs


def _fresh_costs(p: ConvProblem, m: CostModel, as_columns: bool) -> dict[str, int]:
    """Femtoseconds of page faults on the large blocks each strategy allocates per call (``fresh_above``): the
    im2col columns (every strategy in the columns form; a training step also their gradient), the B mixed kernels
    of kernel mixing in a training step and their gradient (inference writes them to a reused buffer; a pointwise
    conv's are left out: its strategies were fitted and measured without), the K outputs of output mixing (and
    their gradient)."""
    per_byte = round(1e15 / m.fresh_bytes_per_s)
    times = 2 if p.training else 1

    def fresh(values: int) -> int:
        nbytes = values * p.itemsize
        return times * nbytes * per_byte if nbytes > m.fresh_above else 0

    as_columns = as_columns and p.kernel_area > 1
    columns = fresh(p.column_values) if as_columns else 0
    kernels = fresh(p.batch * p.weights) if p.training and not p.pointwise else 0
    outputs = fresh(p.experts * p.batch * p.out_channels * p.out_positions)
    return {"columns": columns, "kernel": columns + kernels, "output": columns + outputs}


def _columns_cost(p: ConvProblem, m: CostModel, mac: int) -> int:
    """Writing and reading the im2col columns of a conv of one group, in femtoseconds (``train_columns`` times in a
    training step, whose backward adds a col2im)."""
    cost = round(m.im2col) * p.column_values * mac
    return cost * round(100 * m.train_columns) // 100 if p.training else cost


def kernel_form(p: ConvProblem, m: CostModel, columns: bool | None = None) -> tuple[int, bool]:
    """Kernel mixing's extra cost in femtoseconds beyond the conv and the maps (mixing the B kernels, the conv or
    matmul reading them; with a spatial head, scaling them), and whether it runs in the columns form: the cheaper
    form, or the one ``columns`` forces (a pointwise or grouped conv has one form). Output mixing takes the same
    form (a conv of K * O channels suffers on small maps where the conv of B groups does)."""
    mac, byte = round(1e15 / m.macs_per_s), round(1e15 / m.bytes_per_s)
    w, batch = p.weights, p.batch
    per_weight = m.pointwise_mix if p.pointwise else m.kernel_mix
    extra = round(per_weight[0] if batch == 1 else per_weight[1]) * batch * w * mac
    if p.spatial_head and not p.pointwise:  # the kernel-position scaling: one more pass over the B kernels
        extra += 2 * batch * w * p.itemsize * byte
    if p.pointwise or p.groups != 1:
        return extra, False
    as_matmul = round(m.pointwise_mix[0] if batch == 1 else m.pointwise_mix[1]) * batch * w * mac
    if p.training:
        as_matmul = as_matmul * round(100 * m.train_columns) // 100
    as_columns = as_matmul + _columns_cost(p, m, mac)
    if columns is None:
        columns = as_columns < extra
    return (as_columns, True) if columns else (extra, False)


def cheapest(costs: dict) -> str:
    """The strategy of least cost (ties go to the first listed: kernel, then blocked)."""
    best = "kernel"
    for name, cost in costs.items():  # not min(key=...): torch.compile guards on each comparison of symbolic sizes
        if cost < costs[best]:
            best = name
    return best
