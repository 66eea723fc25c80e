"""Quickstart: write a spec, read the code it compiles to, build it, run it.

    python examples/quickstart.py              # prints the steps; writes outputs/quickstart/ECASpatial.py
    python examples/quickstart.py --out DIR    # writes DIR/ECASpatial.py (the generated code of step 3)

Runs in seconds (most of it importing torch); --quick and DYNATTN_QUICK=1 run the same steps.
"""

import argparse
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="outputs/quickstart",
                   help="folder for ECASpatial.py, the generated code (default %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="accepted for symmetry with the other examples: the whole run takes about 5 s on 2 cores")
    return p.parse_args(argv)


if __name__ == "__main__":
    parse_args()  # --help and mistakes in the arguments answer now, before the imports below take seconds

import torch

from dynattn import AttnSpec, build


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    # 1. A preset: CBAM as its authors' code computes it (channel attention, then spatial).
    spec = AttnSpec.cbam()
    print(spec)

    # 2. The compiler turns it into a torch.fx.GraphModule whose code reads like the paper.
    cbam = build(spec, channels=64)
    print(cbam.code)

    x = torch.randn(8, 64, 28, 28)
    print("CBAM:", tuple(x.shape), "->", tuple(cbam(x).shape),
          f"{sum(p.numel() for p in cbam.parameters())} parameters")

    # 3. A new combination is a few lines of data: ECA's channel gate, then a spatial gate
    #    over three pooled maps with a 5x5 conv, named so the generated class says what it is.
    custom = AttnSpec.chain(
        AttnSpec.eca(),
        AttnSpec(target="spatial", pool=["max", "avg", "std"], kernel_size=5, norm="bn"),
        name="ECASpatial",
    )
    module = build(custom, channels=64).eval()
    print(module.code)
    print("ECASpatial:", tuple(module(x).shape))

    # 4. init="identity": the gate starts at exactly 1, so the module is the identity until trained.
    identity = build(AttnSpec.cbam(init="identity"), channels=64)
    assert torch.equal(identity(x), x)
    print("identity-initialised CBAM leaves its input unchanged: True")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ECASpatial.py").write_text(f"# {custom!r}\n{module.code.strip()}\n")
    print(f"wrote {out / 'ECASpatial.py'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
