"""What a pass did: one record per inserted module or converted conv."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from torch import nn

from .sites import warn_renamed

__all__ = ["SiteRecord", "SkippedSite", "InsertionReport", "report", "text_table"]

REPORT_KEY = "dynattn_report"


def text_table(header: Sequence[object], rows: Iterable[Sequence[object]], right: Sequence[int] = ()) -> str:
    """Columns padded to their widest cell (``right``: the right-aligned ones), a rule under the header."""
    cells = [tuple(map(str, header)), *(tuple(map(str, row)) for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@dataclass(frozen=True)
class SiteRecord:
    #: The site (see graph_passes.sites) or, for a converted conv, its qualified name.
    site: str
    #: Qualified name of the module inserted (or of the DynamicConv2d that replaced the conv).
    module: str
    spec: str
    channels: int
    params_added: int
    #: How the site was selected: a site rule ("residual", "conv", "stage"), or "match".
    rule: str

    @property
    def strategy(self) -> str:
        """Deprecated: :attr:`rule`."""
        warn_renamed("SiteRecord", "strategy", "rule")
        return self.rule

    def __setstate__(self, state: dict) -> None:
        """Unpickle a record of an earlier version, whose ``rule`` was called ``strategy``."""
        if "strategy" in state:
            state = {**state, "rule": state["strategy"]}
            del state["strategy"]
        self.__dict__.update(state)


@dataclass(frozen=True)
class SkippedSite:
    """A site the spec could not be built for (``insert_attention(..., strict=False)``)."""

    site: str
    channels: int
    reason: str


@dataclass(frozen=True)
class InsertionReport:
    model: str
    records: tuple[SiteRecord, ...]
    params_before: int
    #: Submodules traced as leaves (given, or found not to trace): retrace the result with
    #: ``graph_passes.LeafTracer(report.leaves).trace(model)``.
    leaves: tuple[str, ...] = ()
    #: The parts that were traced: ``("",)`` for the whole model, else the largest submodules that
    #: trace (a detector's ``"backbone"``).
    traced: tuple[str, ...] = ("",)
    #: (part, why) for the largest parts left as they are (their forward did not trace, or no input
    #: could be guessed for it, or it was made a leaf because its forward branches on sizes, values or
    #: types and shape propagation failed inside it); ``""`` is the model's own forward.
    untraced: tuple[tuple[str, str], ...] = ()
    #: Sites the spec could not be built for, skipped (see ``strict=``).
    skipped: tuple[SkippedSite, ...] = ()
    #: The modules whose forward was rewritten (``""``: the model's own), each keeping its class.
    rewritten: tuple[str, ...] = ()

    @property
    def params_added(self) -> int:
        return sum(r.params_added for r in self.records)

    @property
    def overhead(self) -> float:
        """Parameters added as a fraction of the model's parameters before the pass."""
        return self.params_added / self.params_before if self.params_before else float("inf")

    #: The columns of :meth:`rows`.
    HEADER = ("site", "module", "spec", "channels", "params added")

    def rows(self) -> list[tuple[str, str, str, int, str]]:
        """One row per record under :attr:`HEADER`."""
        return [(r.site, r.module, r.spec, r.channels, f"{r.params_added:,}") for r in self.records]

    def table(self) -> str:
        """A plain-text table: site, module, channels, parameters added, then totals."""
        text = (text_table(self.HEADER, self.rows(), right=(3, 4))
                + f"\n{len(self.records)} sites in {self.model}: +{self.params_added:,} parameters "
                f"({100 * self.overhead:.2f}% of {self.params_before:,})")
        if self.traced != ("",):
            text += "\ntraced: " + ", ".join(self.traced)
        if self.untraced:
            text += "\nleft as they are: " + "; ".join(f"{p or self.model + '.forward'} ({why})" for p, why in
                                                       self.untraced)
        for s in self.skipped:
            text += f"\nskipped {s.site} ({s.channels} channels): {s.reason}"
        return text

    def __str__(self) -> str:
        return self.table()


def attach(model: nn.Module, rep: InsertionReport) -> None:
    """Keep ``rep`` on the model (a plain attribute: it survives deepcopy and pickle)."""
    model.__dict__[REPORT_KEY] = rep


def report(model: nn.Module) -> InsertionReport:
    """The report of the pass that produced ``model``."""
    if REPORT_KEY in model.__dict__:
        return model.__dict__[REPORT_KEY]
    raise LookupError(f"{type(model).__name__} was not produced by graph_passes.insert_attention")
