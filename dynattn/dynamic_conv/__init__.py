"""``DynamicConv1d`` / ``DynamicConv2d`` / ``DynamicConv3d``: convs whose kernel is mixed per sample
from K experts by a compiled router.

    conv = DynamicConv2d(64, 64, 3, padding=1, spec=AttnSpec.dyconv())
    conv = DynamicConv2d.from_conv(nn.Conv2d(64, 64, 3, padding=1), AttnSpec.odconv())  # upcycled
    conv = DynamicConv3d.from_conv(nn.Conv3d(64, 64, 3, padding=1), "dyconv")           # video
    conv = DynamicConv1d(32, 32, 5, padding=2, spec="condconv")                           # sequences
    conv = DynamicConv2d.from_conv(nn.Conv2d(64, 64, 3, padding=1), AttnSpec.dcd())      # DCD: one kernel
    conv = DynamicConv2d(64, 64, 3, padding=1, spec=AttnSpec.kw())                        # KernelWarehouse

Each has the constructor and semantics of ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Conv3d`` (int or
tuple kernel/stride/padding/dilation, ``padding="same"``/``"valid"``, ``padding_mode``, groups
incl. depthwise, bias, non-cubic kernels; the arguments are checked by the torch conv itself) and
``forward(x)`` only: the routing is computed inside by a router compiled from the spec. One
implementation (:class:`~dynattn.dynamic_conv.module._DynamicConvNd`) serves the three ranks.

The package's files: :mod:`.module` (the layers), :mod:`.cost_model` (how ``strategy="auto"`` chooses),
:mod:`.costs` (the model's arithmetic and fitted table), :mod:`.calibration` (its constants measured on this machine),
:mod:`.profile_cache` (what was measured, kept on disk), :mod:`.measure` (benchmark mode's timings),
:mod:`.upcycle` (a torch conv's weight into every expert), :mod:`.latent` (DCD's latent path), :mod:`.warehouse`
(KernelWarehouse's cells and how a warehouse is planned), :mod:`.shared` (convs upcycled around one warehouse).
"""

from .calibration import calibrate
from .cost_model import (
    COST_MODEL_SOURCES,
    COST_MODELS,
    ConvProblem,
    CostModel,
    calibrated_model,
    choose_columns,
    choose_strategy,
    cost_model,
    strategy_costs,
    use_cost_model,
)
from .measure import clear_measured_strategies
from .module import MIXING_STRATEGIES, DynamicConv1d, DynamicConv2d, DynamicConv3d, dynamic_conv_class

__all__ = ["DynamicConv1d", "DynamicConv2d", "DynamicConv3d", "MIXING_STRATEGIES", "choose_strategy", "strategy_costs",
           "choose_columns", "clear_measured_strategies", "CostModel", "COST_MODELS", "cost_model",
           "dynamic_conv_class", "ConvProblem", "use_cost_model", "calibrate", "calibrated_model",
           "COST_MODEL_SOURCES"]
