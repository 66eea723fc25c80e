"""graph_passes: put dynattn modules into models users already have.

    from graph_passes import insert_attention, list_sites, report
    model = insert_attention(torchvision.models.resnet50(), AttnSpec.se(init="identity"))
    print(report(model))

See :func:`insert_attention` and :mod:`graph_passes.sites` for the ``where=`` selectors.
"""

from dynattn._deprecated import moved_attribute

from .insert import insert_attention, list_sites
from .report import InsertionReport, report
from .rewrite import is_rewritten, original_class, rewritten_code
from .sites import Site
from .trace import LeafTracer, TraceFailure
from .unshare import unshare_modules

__all__ = ["insert_attention", "list_sites", "report", "InsertionReport", "Site", "TraceFailure", "LeafTracer",
           "is_rewritten", "original_class", "rewritten_code", "unshare_modules"]

#: Former top-level names: (module they live in now, name there).
_MOVED = {
    "SiteRecord": ("graph_passes.report", "SiteRecord"),
    "SkippedSite": ("graph_passes.report", "SkippedSite"),
    "SITE_STRATEGIES": ("graph_passes.sites", "SITE_RULES"),
}


def __getattr__(name: str):
    if name in _MOVED:
        return moved_attribute(__name__, name, *_MOVED[name])
    raise AttributeError(f"module 'graph_passes' has no attribute {name!r}")
