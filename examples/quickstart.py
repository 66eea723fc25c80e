"""Quickstart: write a spec, read the code it compiles to, build it, run it.

    python examples/quickstart.py
"""

import torch

from dynattn import AttnSpec, build

# 1. A preset: CBAM as its authors' code computes it (channel attention, then spatial).
spec = AttnSpec.cbam()
print(spec)

# 2. The compiler turns it into a torch.fx.GraphModule whose code reads like the paper.
cbam = build(spec, channels=64)
print(cbam.code)

x = torch.randn(8, 64, 28, 28)
print("CBAM:", tuple(x.shape), "->", tuple(cbam(x).shape), f"{sum(p.numel() for p in cbam.parameters())} parameters")

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
