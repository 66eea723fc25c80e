"""DCD's layer against the official one (tests/reference/dcd.py, written from liyunsheng13/dcd), eager and compiled.

    python -m tests.bench_dcd_official --batch 32 --channels 64 --size 28 --repeats 20 --threads 1 --clock cpu

Both layers hold the same weights; each row's time is the median of interleaved runs of inference (no grad) and of
a training step (forward, sum, backward), with the ratio to the static conv of the same shape (tests/official_bench.py).
"""

import torch
from torch import nn

from dynattn import AttnSpec, DynamicConv2d
from dynattn.interop import load_dcd_weights
from tests.official_bench import compare, parser, with_compiled
from tests.reference.dcd import DCDReference


def _modules(c: int, grid: int, compiled: bool) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    official = DCDReference(c, c, 3, 1, 1, grid=grid)
    ours = DynamicConv2d(c, c, 3, padding=1, bias=False, spec=AttnSpec.dcd(pool_grid=grid))
    load_dcd_weights(ours, official.state_dict())
    return with_compiled({"static": nn.Conv2d(c, c, 3, padding=1, bias=False), "official": official, "dynattn": ours},
                         compiled)


def main(argv=None) -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--grid", type=int, default=1, help="1: conv_dy; 2: conv_basic_dy")
    args = p.parse_args(argv)
    compare(args, _modules(args.channels, args.grid, args.compiled), f"DCD (pool_grid={args.grid})")


if __name__ == "__main__":
    main()
