"""The documentation's generated parts, made from the code at build time so that they cannot drift.

MkDocs runs this file as a hook (``hooks:`` in mkdocs.yml): a page holding a marker line such as
``<!-- gen:spec-fields -->`` gets the generated text in its place, and the presets gallery's pictures are
added to the site as files. Nothing generated is committed. ``python tools/gen_docs.py NAME`` prints one
generated part (``spec-fields``, ``cli``, ``api``, ``gallery``, ``changelog``, ``index``) to read it
without building the site.

- ``spec-fields``: every ``AttnSpec`` field with its meaning (the ``#:`` comment above it in
  dynattn/spec.py), its values (``dynattn.vocab.FIELD_VALUES``, which validation uses) and its default;
- ``gallery``: each preset's reference, parameters at C=256, generated code and a picture of what its
  (untrained) module passes on a sample photo;
- ``cli``: ``--help`` of the ``dynattn`` command and of each sub-command, from the parser itself;
- ``api``: a mkdocstrings entry (at the module defining it) for every name in ``dynattn.__all__`` and
  ``graph_passes.__all__``;
- ``index`` and ``changelog``: README.md and CHANGELOG.md, whose links are made site links.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import io
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^<!-- gen:([a-z-]+) -->$", flags=re.M)
#: the channel count the gallery's parameter counts and code are shown at
GALLERY_CHANNELS = 256
#: what each per-target default field is called in dynattn.vocab
TARGET_DEFAULTS = {"pool": "DEFAULT_POOL", "excite": "DEFAULT_EXCITE", "merge": "DEFAULT_MERGE",
                   "gate": "DEFAULT_GATE"}


def _field_comments() -> dict[str, str]:
    """Each AttnSpec field's ``#:`` comment in dynattn/spec.py (a field right below another without a
    comment of its own shares that one: ``gamma`` / ``beta``)."""
    lines = (ROOT / "dynattn" / "spec.py").read_text().splitlines()
    tree = ast.parse("\n".join(lines))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "AttnSpec")
    out: dict[str, str] = {}
    last = ""
    for node in cls.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above, i = [], node.lineno - 2
        while i >= 0 and lines[i].strip().startswith("#:"):
            above.insert(0, lines[i].strip()[2:].strip())
            i -= 1
        last = " ".join(above) if above else last
        out[node.target.id] = last
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default(field: dataclasses.Field) -> str:
    from dynattn import vocab

    if field.name == "target":
        return "`channel`"
    if field.name in TARGET_DEFAULTS:
        by_target = getattr(vocab, TARGET_DEFAULTS[field.name])
        return "by target: " + ", ".join(f"{t} `{v!r}`" for t, v in by_target.items())
    if field.name == "kernel_size":
        return "by excitation: " + ", ".join(f"{e} `{k}`" for e, k in vocab.DEFAULT_KERNEL_SIZE.items())
    return f"`{field.default!r}`"


def spec_fields() -> str:
    """The table of every AttnSpec field: meaning, values, default."""
    from dynattn import AttnSpec
    from dynattn.vocab import FIELD_VALUES

    meanings = _field_comments()
    rows = ["| field | meaning | values | default |", "|---|---|---|---|"]
    for field in dataclasses.fields(AttnSpec):
        values = FIELD_VALUES[field.name]
        shown = values if isinstance(values, str) else ", ".join(f"`{v!r}`" for v in values)
        rows.append(f"| `{field.name}` | {_cell(meanings.get(field.name, ''))} | {_cell(shown)} | "
                    f"{_cell(_default(field))} |")
    return "\n".join(rows)


def cli() -> str:
    """``--help`` of the dynattn command and each sub-command, as the parser prints it (100 columns)."""
    import argparse

    from dynattn.cli import _parser

    os.environ["COLUMNS"] = "100"
    parser = _parser()
    parts = ["## `dynattn`", "", "```text", parser.format_help().rstrip(), "```"]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        parts += ["", f"## `dynattn {name}`", "", "```text", command.format_help().rstrip(), "```"]
    return "\n".join(parts)


def api() -> str:
    """A mkdocstrings entry for every exported name of both packages."""
    import dynattn
    import graph_passes

    parts = []
    for package in (dynattn, graph_passes):
        parts += [f"## `{package.__name__}`", ""]
        for name in package.__all__:  # where it is defined: graph_passes.report is a function and a module
            obj = getattr(package, name)
            parts += [f"::: {obj.__module__}.{obj.__qualname__}", "    options:",
                      f"      heading: {package.__name__}.{name}", ""]
    return "\n".join(parts)


def _linked(reference: str) -> str:
    """A preset's reference with its arXiv id and GitHub repositories as links."""
    text = re.sub(r"arXiv:(\d{4}\.\d{4,5})", r"[arXiv:\1](https://arxiv.org/abs/\1)", reference)
    return re.sub(r"(?<![\w./\[])([A-Za-z][\w-]*/[\w.-]*\w)(?![\w/\]])", r"[\1](https://github.com/\1)", text)


def _gallery_module(name: str, flavor: str | None = None):
    """The preset's module at GALLERY_CHANNELS (a kernel preset: a 3x3 dynamic conv) and the code it shows."""
    from torch import nn

    from dynattn import build, get_spec

    spec = get_spec(name) if flavor is None else get_spec(name, flavor=flavor)
    if spec.kind == "kernel":
        module = build(spec, conv=nn.Conv2d(GALLERY_CHANNELS, GALLERY_CHANNELS, 3, padding=1))
        return spec, module, module.router.code
    module = build(spec, channels=GALLERY_CHANNELS)
    return spec, module, module.code


@functools.cache
def _photo_features():
    """A sample photo (scikit-learn's china.jpg, downsized) and 64 feature maps of it from a seeded conv."""
    import torch
    from sklearn.datasets import load_sample_image
    from torch import nn

    photo = torch.tensor(load_sample_image("china.jpg"), dtype=torch.float32).permute(2, 0, 1)[None] / 255.0
    photo = nn.functional.interpolate(photo, size=(160, 240), mode="area")
    torch.manual_seed(0)
    stem = nn.Sequential(nn.Conv2d(3, 64, 5, padding=2, padding_mode="reflect"), nn.ReLU())
    with torch.no_grad():
        return photo, stem((photo - 0.45) / 0.25)


def _passed_map(name: str, features):
    """What the preset's untrained module (seeded) lets through at each position of ``features``:
    sum over channels of |y| / sum of |x|; ``None`` for a kernel preset (its gate is per sample)."""
    import torch

    from dynattn import build, get_spec

    spec = get_spec(name)
    if spec.kind == "kernel":
        return None
    torch.manual_seed(0)
    module = build(spec, channels=features.shape[1]).eval()
    with torch.no_grad():
        out = module(features)
    return (out.abs().sum(1) / features.abs().sum(1).clamp_min(1e-6))[0]


def _png(photo, passed) -> bytes:
    """The photo in grey with the map over it in a colour scale spanning its 2nd to 98th percentiles."""
    import numpy as np
    from matplotlib import colormaps
    from PIL import Image

    grey = photo[0].mean(0).numpy()
    values = passed.numpy()
    low, high = np.percentile(values, [2, 98])
    scaled = np.clip((values - low) / max(high - low, 1e-12), 0, 1)
    rgb = 0.45 * grey[..., None] + 0.55 * colormaps["viridis"](scaled)[..., :3]
    image = Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def gallery_images() -> dict[str, bytes]:
    """``img/gallery/<preset>.png`` for every feature preset."""
    from dynattn import list_presets

    photo, features = _photo_features()
    out = {}
    for name in list_presets():
        passed = _passed_map(name, features)
        if passed is not None:
            out[f"img/gallery/{name}.png"] = _png(photo, passed)
    return out


def _routing(name: str, features) -> str:
    import torch

    from dynattn import DynamicConv2d, get_spec

    torch.manual_seed(0)
    conv = DynamicConv2d(features.shape[1], features.shape[1], 3, padding=1, spec=get_spec(name)).eval()
    with torch.no_grad():
        logits = conv.router(features)
    first = logits[0] if isinstance(logits, (tuple, list)) else logits
    return ", ".join(f"{v:.3f}" for v in first.flatten()[: conv.spec.experts].tolist())


def _gallery_entry(name: str, features) -> list[str]:
    from dynattn.presets import _FLAVORS, PRESETS

    spec, module, code = _gallery_module(name)
    params = sum(p.numel() for p in module.parameters())
    doc = " ".join((PRESETS[name].__doc__ or "").strip().split("\n\n")[0].split())
    lines = [f"## `{name}`", "", doc, "", f"- **reference**: {_linked(spec.reference or '')}"]
    for flavor in _FLAVORS[name][1:]:
        lines.append(f"- **`flavor=\"{flavor}\"`**: {_linked(_gallery_module(name, flavor)[0].reference or '')}")
    if spec.kind == "kernel":
        lines += [f"- **parameters**: {params:,} as a 3x3 dynamic conv {GALLERY_CHANNELS} -> {GALLERY_CHANNELS} "
                  f"({spec.experts} experts and the router)", "",
                  "Its gate is per sample, not per position: the photo's expert weights are "
                  f"{_routing(name, features)}. The router's code:"]
    else:
        lines += [f"- **parameters** at C={GALLERY_CHANNELS}: {params:,}", "",
                  f"![{name} on a sample photo](img/gallery/{name}.png)", "", "Its code:"]
    return [*lines, "", "```text", code.strip(), "```", ""]


def gallery() -> str:
    """Every preset: what it is, its reference(s), its parameters, its picture and its generated code."""
    from dynattn import list_presets

    _, features = _photo_features()
    lines = []
    for name in list_presets():
        lines += _gallery_entry(name, features)
    return "\n".join(lines)


def _site_links(text: str) -> str:
    """A repository file's links into docs/ made links between site pages, others to the repository."""
    return text.replace("](docs/", "](").replace("](CHANGELOG.md)", "](changelog.md)")


def index() -> str:
    return _site_links((ROOT / "README.md").read_text())


def changelog() -> str:
    return _site_links((ROOT / "CHANGELOG.md").read_text())


GENERATORS = {"spec-fields": spec_fields, "cli": cli, "api": api, "gallery": gallery, "index": index,
              "changelog": changelog}


def expand(markdown: str) -> str:
    """``markdown`` with every marker replaced by what it names."""
    return MARKER.sub(lambda m: GENERATORS[m.group(1)](), markdown)


# ------------------------------------------------------------------ MkDocs hooks
def on_files(files, config):
    from mkdocs.structure.files import File

    for path, content in gallery_images().items():
        files.append(File.generated(config, path, content=content))
    return files


def on_page_markdown(markdown, page, config, files):
    return expand(markdown)


if __name__ == "__main__":
    sys.stdout.write(GENERATORS[sys.argv[1]]() + "\n")
