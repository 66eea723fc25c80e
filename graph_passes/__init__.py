"""graph_passes: put dynattn modules into models users already have.

    from graph_passes import insert_attention, list_sites, report
    model = insert_attention(torchvision.models.resnet50(), AttnSpec.se(init="identity"))
    print(report(model))

See :func:`insert_attention` and :mod:`graph_passes.sites` for the ``where=`` selectors.
"""

from .insert import insert_attention, list_sites
from .report import InsertionReport, SiteRecord, SkippedSite, report
from .rewrite import is_rewritten, original_class, rewritten_code
from .sites import SITE_STRATEGIES, Site
from .trace import LeafTracer, TraceFailure

__all__ = ["insert_attention", "list_sites", "report", "Site", "SiteRecord", "SkippedSite", "InsertionReport",
           "SITE_STRATEGIES", "TraceFailure", "LeafTracer", "is_rewritten", "original_class", "rewritten_code"]
