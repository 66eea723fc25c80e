"""Insert CBAM into torchvision's resnet18 and convert its convs to dynamic convs, with the site report.

    python examples/insert_resnet18.py              # writes outputs/insert_resnet18/report.md
    python examples/insert_resnet18.py --out DIR    # writes DIR/report.md
    python examples/insert_resnet18.py --quick      # 64x64 inputs instead of 224x224

The model is built without weights here; with pretrained weights the steps are the same, and
because CBAM starts as the identity and the dynamic convs start as the convs they replace,
the rewritten model's outputs equal the original's until it is fine-tuned.
"""

import argparse
import os
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="outputs/insert_resnet18", help="folder for report.md (default %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="64x64 inputs (also DYNATTN_QUICK=1); either size takes about 8 s of CPU, mostly imports")
    return p.parse_args(argv)


if __name__ == "__main__":
    parse_args()  # --help and mistakes in the arguments answer now, before the imports below take seconds

import torch
import torchvision

from dynattn import AttnSpec
from graph_passes import insert_attention, list_sites, report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size = 64 if args.quick or os.environ.get("DYNATTN_QUICK") else 224

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(2, 3, size, size)

    # 1. where would CBAM go? (the SE-ResNet placement: each block's branch, before the residual add)
    for site in list_sites(model, AttnSpec.cbam(), where="residual"):
        print(f"site {site.name:14s} {site.channels:4d} channels  {site.shape[2]}x{site.shape[3]}")

    # 2. insert it, identity-initialised: same outputs, every original weight kept
    with_cbam = insert_attention(model, AttnSpec.cbam(init="identity"), where="residual")
    print(report(with_cbam))
    with torch.no_grad():
        print("max |difference| after inserting CBAM:", (with_cbam(x) - model(x)).abs().max().item())

    # 3. convert the last stage's convs to upcycled dynamic convs (4 experts, DyConv routing)
    dynamic = insert_attention(with_cbam, AttnSpec.dyconv(experts=4), where="layer4.*")
    print(report(dynamic))
    with torch.no_grad():
        print("max |difference| after converting convs:", (dynamic(x) - model(x)).abs().max().item())

    # 4. the original checkpoint still loads: only the new modules' keys are missing
    missing = dynamic.load_state_dict(model.state_dict(), strict=False).missing_keys
    print(f"{len(missing)} keys missing when loading the original checkpoint, all new:",
          all("_cbam." in k or ".router." in k for k in missing))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(f"# resnet18 + CBAM (residual) + DyConv (layer4)\n\n```text\n{report(with_cbam)}\n"
                                   f"```\n\n```text\n{report(dynamic)}\n```\n")
    print(f"wrote {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
