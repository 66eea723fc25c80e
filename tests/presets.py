"""The preset names the per-preset tests iterate over: every preset, by the kind of module it builds."""

from dynattn import get_spec, list_presets

FEATURE_PRESETS = [name for name in list_presets() if get_spec(name).kind == "feature"]
KERNEL_PRESETS = [name for name in list_presets() if get_spec(name).kind == "kernel"]


def fewest_batchnorm_values(spec, batch: int, h: int, w: int) -> int | None:
    """The fewest values any BatchNorm of ``spec`` normalises per channel in training on a (batch, C, h, w)
    input (None without BatchNorm): after a pooled channel descriptor, one per sample; after a strip
    MLP, every position of both strips; after a strip conv, the positions of the shorter strip; after
    a conv on the map, every position."""
    counts = []
    for leaf in spec.leaves():
        if leaf.target == "kernel" and "latent" in leaf.heads:  # DCD's latent path: over the (stride 1) map
            counts.append(batch * h * w)
        if leaf.norm != "bn":
            continue
        if leaf.target == "kernel":  # a router's pooled descriptor (KernelWarehouse's attention): one per sample
            counts.append(batch)
        elif leaf.target == "channel":
            grid = 1 if not leaf.extent else -(-h // leaf.extent) * -(-w // leaf.extent)
            counts.append(batch * grid)
        elif leaf.target == "strip":
            counts.append(batch * (h + w if leaf.excite == "mlp" else min(h, w)))
        else:
            counts.append(batch * h * w)
    return min(counts) if counts else None
