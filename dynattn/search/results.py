"""What a study found, as rows and as files: ``results.md`` (trials best first; for several objectives the
Pareto set first), ``best_spec.txt`` (the best spec's text, or the Pareto set's, one a line: each line goes
through ``dynattn.parse_spec``), a PNG (each trial's objective and the best so far; for several objectives
the first two, with the Pareto front), next to the study's ``study.db``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .runner import Objective

__all__ = ["TrialRow", "trial_rows", "best_rows", "write_results"]


@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str
    spec: str
    where: str
    sites: tuple[str, ...]
    metrics: dict[str, float]
    values: tuple[float, ...] | None
    reason: str
    pareto: bool = False
    same_as: int | None = None  # the complete trial whose values it took (the same point drawn again)


def trial_rows(study: Any) -> list[TrialRow]:
    """Every trial of ``study``, in trial order."""
    best = {t.number for t in study.best_trials} if _complete(study) else set()
    rows = []
    for t in study.get_trials(deepcopy=False):
        metrics = {k.removeprefix("metric:"): v for k, v in t.user_attrs.items() if k.startswith("metric:")}
        rows.append(TrialRow(t.number, t.state.name, t.user_attrs.get("spec", ""), t.user_attrs.get("where", ""),
                             tuple(t.user_attrs.get("sites", ())), metrics,
                             tuple(t.values) if t.values is not None and t.state.name == "COMPLETE" else None,
                             t.user_attrs.get("fail_reason", ""), t.number in best, t.user_attrs.get("same_as")))
    return rows


def _complete(study: Any) -> bool:
    return any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False))


def best_rows(rows: Sequence[TrialRow], objectives: Sequence[Objective]) -> list[TrialRow]:
    """Complete trials best first: by the objective (several: the Pareto set first, then by the first)."""
    sign = [1 if o.direction == "maximize" else -1 for o in objectives]
    done = [r for r in rows if r.values is not None]
    return sorted(done, key=lambda r: (not r.pareto, *(-s * v for s, v in zip(sign, r.values)), r.number))


def _markdown(study: Any, rows: list[TrialRow], objectives: Sequence[Objective]) -> str:
    ranked = best_rows(rows, objectives)
    names = [o.name for o in objectives]
    extra = sorted({k for r in ranked for k in r.metrics} - set(names))
    multi = len(objectives) > 1
    title = "Pareto set first (marked *), then the other complete trials" if multi else "best first"
    lines = [f"# Study {study.study_name}: {len(ranked)} complete trials of {len(rows)}, {title}", "",
             "objectives: " + ", ".join(f"{o.name} ({o.direction})" for o in objectives)
             + "; a trial marked (= n) drew the point of trial n again and took its values", "",
             "| rank | trial | spec | where | sites | " + " | ".join(names + extra) + " |",
             "|---:|---:|---|---|---:|" + "---:|" * (len(names) + len(extra))]
    for i, r in enumerate(ranked, 1):
        cells = [_fmt(r.metrics.get(k)) for k in names + extra]
        mark = "*" if multi and r.pareto else ""
        number = f"{r.number} (= {r.same_as})" if r.same_as is not None else str(r.number)
        lines.append(f"| {i}{mark} | {number} | `{r.spec}` | {r.where} | {len(r.sites)} | " + " | ".join(cells)
                     + " |")
    others = [r for r in rows if r.values is None]
    if others:
        lines += ["", "Trials not complete:", "", "| trial | state | spec | where | reason |", "|---:|---|---|---|---|"]
        lines += [f"| {r.number} | {r.state} | `{r.spec}` | {r.where} | {r.reason.replace('|', '/')} |"
                  for r in others]
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,.0f}" if float(value).is_integer() and abs(value) >= 100 else f"{value:.4g}"


def best_spec_lines(rows: list[TrialRow], objectives: Sequence[Objective]) -> list[str]:
    """The best spec's text (several objectives: the Pareto set's, each once)."""
    ranked = best_rows(rows, objectives)
    if not ranked:
        return []
    chosen = [r for r in ranked if r.pareto] if len(objectives) > 1 else ranked[:1]
    return list(dict.fromkeys(r.spec for r in chosen))


def _plot(rows: list[TrialRow], objectives: Sequence[Objective], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    done = [r for r in rows if r.values is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if len(objectives) == 1:
        pick = max if objectives[0].direction == "maximize" else min
        running = [pick(r.values[0] for r in done[:i + 1]) for i in range(len(done))]
        ax.scatter([r.number for r in done], [r.values[0] for r in done], label="complete trial")
        ax.step([r.number for r in done], running, where="post", color="black", label="best so far")
        ax.set_xlabel("trial")
        ax.set_ylabel(objectives[0].name)
    else:
        ax.scatter([r.values[0] for r in done], [r.values[1] for r in done], color="#9ab", label="trial")
        front = sorted((r for r in done if r.pareto), key=lambda r: r.values[0])
        ax.plot([r.values[0] for r in front], [r.values[1] for r in front], "o-", color="#c33", label="Pareto set")
        ax.set_xlabel(objectives[0].name)
        ax.set_ylabel(objectives[1].name)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_results(study: Any, objectives: Sequence[Objective], out: str | Path) -> dict[str, Path]:
    """Write results.md, best_spec.txt and results.png (when matplotlib is there) under ``out``; their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = trial_rows(study)
    files = {"results": out / "results.md", "best_spec": out / "best_spec.txt", "plot": out / "results.png"}
    files["results"].write_text(_markdown(study, rows, objectives))
    files["best_spec"].write_text("".join(line + "\n" for line in best_spec_lines(rows, objectives)))
    if not _plot(rows, objectives, files["plot"]):
        del files["plot"]
    return files
