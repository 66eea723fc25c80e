"""Pictures: the spatial attention of CBAM over scikit-learn's sample photos, as a labelled PNG.

    python examples/attention_maps.py                 # writes outputs/attention_maps/attention_maps.png
    python examples/attention_maps.py --out DIR       # writes DIR/attention_maps.png

Needs the examples extra (``pip install -e ".[examples]"``: scikit-learn for the photos,
matplotlib for the figure). CBAM is inserted after the stem of torchvision's resnet18 (no
weights are downloaded, so the network is untrained: the map shows where its spatial gate
responds to the photos' first features, which follow edges and contrast).
``dynattn.record_gates`` records every gate map of every attention module during one forward
pass. Each row shows the photo, the spatial gate (its colour bar gives the gate's values;
the colours span its 2nd to 98th percentiles) and the two overlaid.

The photos are reflect-padded by 32 pixels before the forward pass and the maps cropped back:
the stem's 7x7 conv and CBAM's 7x7 spatial conv pad with zeros, which otherwise draws a
bright frame along the border that says nothing about the photo.
"""

import argparse
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="outputs/attention_maps",
                   help="folder for attention_maps.png (default outputs/attention_maps)")
    p.add_argument("--quick", action="store_true",
                   help="accepted for symmetry with the other examples: the whole run takes about 10 s of CPU time")
    return p.parse_args(argv)


if __name__ == "__main__":
    parse_args()  # --help and mistakes in the arguments answer now, before the imports below take seconds

import torch
import torchvision

import dynattn
from dynattn import AttnSpec
from graph_passes import insert_attention

PAD = 32  # pixels of reflection around each photo; the gate map (stride 2) loses PAD // 2 per side


def gate_maps(photos) -> tuple[torch.Tensor, dict]:
    """The spatial gate of CBAM after resnet18's stem for each photo, at the photo's resolution."""
    torch.manual_seed(0)
    model = insert_attention(torchvision.models.resnet18(weights=None).eval(), AttnSpec.cbam(), where="relu")
    x = torch.stack([torch.tensor(p, dtype=torch.float32).permute(2, 0, 1) / 255.0 for p in photos])
    x = torchvision.transforms.functional.normalize(x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    x = torch.nn.functional.pad(x, (PAD, PAD, PAD, PAD), mode="reflect")
    with dynattn.record_gates(model) as gates, torch.no_grad():
        model(x)
    maps = gates.maps["relu_cbam"]["spatial_gate"]  # (2, 1, H/2, W/2) of the padded photos
    maps = maps[:, :, PAD // 2:-(PAD // 2), PAD // 2:-(PAD // 2)]
    up = torch.nn.functional.interpolate(maps, size=photos[0].shape[:2], mode="bilinear", align_corners=False)
    return up[:, 0], gates.maps


def main(argv=None):
    args = parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from sklearn.datasets import load_sample_images
    except ImportError:
        raise SystemExit('this example needs scikit-learn and matplotlib: pip install -e ".[examples]"') from None

    samples = load_sample_images()  # china.jpg and flower.jpg, 427 x 640
    photos, names = samples.images, [Path(f).name for f in samples.filenames]
    maps, recorded = gate_maps(photos)
    print("recorded gates:", {k: list(v) for k, v in recorded.items()})
    lo, hi = (float(v) for v in torch.quantile(maps.flatten(), torch.tensor([0.02, 0.98])))

    fig, axes = plt.subplots(len(photos), 3, figsize=(12, 2.55 * len(photos) + 0.7), layout="constrained")
    for row, (photo, gate, name) in enumerate(zip(photos, maps, names)):
        ax_photo, ax_gate, ax_overlay = axes[row]
        ax_photo.imshow(photo)
        image = ax_gate.imshow(gate.numpy(), cmap="magma", vmin=lo, vmax=hi)
        ax_overlay.imshow(photo)
        ax_overlay.imshow(gate.numpy(), cmap="magma", vmin=lo, vmax=hi, alpha=0.55)
        ax_photo.set_ylabel(name, fontsize=10)
        for ax in (ax_photo, ax_gate, ax_overlay):
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, title in zip(axes[0], ("photo", "CBAM spatial gate after the stem", "gate over the photo")):
        ax.set_title(title, fontsize=10)
    bar = fig.colorbar(image, ax=axes, shrink=0.8, pad=0.01)
    bar.set_label("gate value (sigmoid; 2nd to 98th percentile)")
    fig.suptitle("Where CBAM's spatial gate responds in an untrained resnet18 (dynattn.record_gates)", fontsize=11)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "attention_maps.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"spatial gate range {float(maps.min()):.3f} .. {float(maps.max()):.3f}; wrote {path}")


if __name__ == "__main__":
    main()
