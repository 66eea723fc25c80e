"""Pictures: the spatial attention of CBAM over scikit-learn's sample photos, as a PNG overlay.

    python examples/attention_maps.py           # writes attention_maps.png (DYNATTN_EXAMPLES_OUT=dir)

CBAM is inserted after the stem of torchvision's resnet18 (no weights are downloaded, so the
network is untrained: the map shows where its spatial gate responds to the photos' first
features, which follow edges and contrast). ``dynattn.record_gates`` records every gate map of
every attention module during one forward pass; each panel shows the photo, the spatial gate
(contrast stretched between its 2nd and 98th percentiles) and the two overlaid.
"""

import os
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from sklearn.datasets import load_sample_images

import dynattn
from dynattn import AttnSpec
from graph_passes import insert_attention


def heat(values: np.ndarray) -> np.ndarray:
    """A blue-to-yellow colour map for values in [0, 1], as uint8 RGB."""
    v = np.clip(values, 0, 1)[..., None]
    low, mid, high = np.array([48, 18, 59]), np.array([200, 60, 90]), np.array([250, 230, 80])
    rgb = np.where(v < 0.5, low + (mid - low) * (v / 0.5), mid + (high - mid) * ((v - 0.5) / 0.5))
    return rgb.astype(np.uint8)


def main():
    torch.manual_seed(0)
    model = insert_attention(torchvision.models.resnet18(weights=None).eval(), AttnSpec.cbam(), where="relu")
    photos = load_sample_images().images  # china.jpg and flower.jpg, 427 x 640
    x = torch.stack([torch.tensor(p, dtype=torch.float32).permute(2, 0, 1) / 255.0 for p in photos])
    x = torchvision.transforms.functional.normalize(x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    with dynattn.record_gates(model) as gates, torch.no_grad():
        model(x)
    maps = gates.maps["relu_cbam"]["spatial_gate"]  # (2, 1, 214, 320): half the photo's resolution
    print("recorded gates:", {k: list(v) for k, v in gates.maps.items()})
    up = torch.nn.functional.interpolate(maps, size=photos[0].shape[:2], mode="bilinear", align_corners=False)
    tiles = []
    for photo, m in zip(photos, up[:, 0]):
        lo, hi = np.percentile(m.numpy(), [2, 98])
        m = ((m.numpy() - lo) / (hi - lo + 1e-8)).clip(0, 1)
        overlay = (0.5 * photo + 0.5 * heat(m)).astype(np.uint8)
        tiles.append(np.concatenate([photo, heat(m), overlay], axis=1))
    out = Path(os.environ.get("DYNATTN_EXAMPLES_OUT", "."))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "attention_maps.png"
    Image.fromarray(np.concatenate(tiles, axis=0)).resize((960, 427)).save(path)
    print(f"spatial gate range {maps.min():.3f} .. {maps.max():.3f}; wrote {path}")


if __name__ == "__main__":
    main()
