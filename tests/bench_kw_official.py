"""KernelWarehouse's layer against the official one (tests/reference/kw.py, written from OSVAI/KernelWarehouse),
eager and compiled.

    python -m tests.bench_kw_official --batch 32 --channels 64 --size 28 --budget 1 --repeats 20 --threads 1

One 3x3 conv with its own warehouse at the given budget; both layers hold the same weights (``load_kw_weights``) at
the official starting temperature (1); each row's time is the median of interleaved runs of inference (no grad) and
of a training step (forward, sum, backward), with the ratio to the static conv of the same shape
(tests/official_bench.py).
"""

import torch
from torch import nn

from dynattn import AttnSpec, DynamicConv2d
from dynattn.interop import load_kw_weights
from tests.official_bench import compare, parser, with_compiled
from tests.reference.kw import KWNet


def _modules(c: int, budget: float, compiled: bool) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    official = KWNet([((c, c, 3), dict(padding=1, bias=False), "stage0")], cell_num_ratio=budget)
    ours = DynamicConv2d(c, c, 3, padding=1, bias=False, spec=AttnSpec.kw(budget))
    load_kw_weights(ours, official.convs[0].state_dict(), official.warehouse_manager.take_cell(0))
    return with_compiled({"static": nn.Conv2d(c, c, 3, padding=1, bias=False), "official": official.convs[0],
                          "dynattn": ours}, compiled)


def main(argv=None) -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=float, default=1, help="the warehouse's budget (1x, 4x, 0.5x ...)")
    args = p.parse_args(argv)
    budget = int(args.budget) if args.budget == int(args.budget) else args.budget
    compare(args, _modules(args.channels, budget, args.compiled), f"KernelWarehouse ({budget}x)")


if __name__ == "__main__":
    main()
