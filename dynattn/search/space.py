"""The search space as data: which presets, which of their fields vary over which values, and where.

    SearchSpace(presets=("se", "eca", "cbam", "dyconv"), fields={"reduction": None, "kernel_size": (3, 7)},
                where=("residual", "stage", "stages"))

- ``presets``: any preset names (``dynattn.list_presets()``), dynamic convs included.
- ``fields``: a spec field or a preset keyword -> the values to try (``None``: defaults from the spec
  vocabulary, :data:`DEFAULT_VALUES`). A preset takes a field as its own keyword where it has one
  (``cbam(reduction=8)``), else, on a one-stage spec, as a spec field (``AttnSpec.se().replace(gate=...)``);
  a value is kept for a preset only if the spec it gives is valid, so every draw is a valid spec.
- ``where``: site rules ``residual``, ``stage``, ``conv``; ``default`` (the library's own placement);
  ``stages`` (a non-empty subset of the stage sites, drawn per trial: where to plug); or a glob / ``re:``
  selector of ``graph_passes.sites``. A kernel-target preset (a dynamic conv replaces convs) draws from
  ``default`` (its own conversion sites, ``dynattn.conv_placement``), and ``conv`` and selectors where listed.

Everything is checked when the space is made: an unknown preset, field, value or placement, or an empty
space, is a :class:`~dynattn.errors.SpecError` naming it (with a did-you-mean), before any trial runs.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import DynattnError, SpecError
from ..presets import PRESETS
from ..spec import AttnSpec
from ..vocab import FIELD_VALUES

__all__ = ["SearchSpace", "Draw", "DEFAULT_VALUES", "PLACEMENTS"]

#: Values tried for a field given as ``None``: the vocabulary's words for enumerated fields, a few
#: common settings for numeric ones.
DEFAULT_VALUES: dict[str, tuple] = {
    **{name: values for name, values in FIELD_VALUES.items() if isinstance(values, tuple) and name != "heads"},
    "pool": (("avg",), ("max",), ("avg", "max")),
    "reduction": (4, 8, 16),
    "kernel_size": (3, 5, 7),
    "experts": (2, 4, 8),
    "temperature": (1.0, 4.0, 30.0),
    "extent": (0, 2, 4),
    "dilation": (1, 2, 4),
    "gamma": (1, 2, 3),
    "frequencies": ("top1", "top4", "top16", "low16"),
}
#: The named placements; any other ``where`` item must be a glob or ``re:`` selector.
PLACEMENTS = ("default", "residual", "stage", "conv", "stages")
_SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(AttnSpec))
MAX_STAGE_SITES = 6  # "stages" draws one of the 2^n - 1 non-empty subsets


def _preset_keywords(preset: str) -> tuple[str, ...]:
    return tuple(inspect.signature(PRESETS[preset]).parameters)


def _make(preset: str, values: Mapping[str, Any]) -> AttnSpec:
    """The spec of ``preset`` with ``values``: its own keywords first, then spec fields on a one-stage spec."""
    own = _preset_keywords(preset)
    spec = PRESETS[preset](**{k: v for k, v in values.items() if k in own})
    rest = {k: v for k, v in values.items() if k not in own}
    if rest and spec.stages:
        raise SpecError(next(iter(rest)), rest[next(iter(rest))], f"{preset} has stages: set on its own keywords only")
    return spec.replace(**rest) if rest else spec


def spec_text(preset: str, values: Mapping[str, Any]) -> str:
    """Text that ``dynattn.parse_spec`` reads back: ``cbam(reduction=8)`` where the preset's keywords say it
    all, else the spec's repr."""
    own = _preset_keywords(preset)
    if _make(preset, values) == _make(preset, {k: v for k, v in values.items() if k in own}):
        values = {k: v for k, v in values.items() if k in own}  # the spec fields drawn change nothing
    if all(k in own for k in values):
        args = ", ".join(f"{k}={v!r}" for k, v in values.items())
        return f"{preset}({args})" if args else preset
    return repr(_make(preset, values))


@dataclass(frozen=True)
class Draw:
    """One point of the space: the preset, its field values, the spec, its text, and where it goes."""

    preset: str
    values: dict[str, Any]
    spec: AttnSpec
    text: str
    where: str
    selector: Any  # what ``insert_attention(where=...)`` takes; None: the default placement


@dataclass
class SearchSpace:
    """Presets x field values x placements; validated when made (see the module docstring)."""

    presets: Sequence[str] = ("se", "eca", "cbam")
    fields: Mapping[str, Sequence[Any] | None] = field(default_factory=dict)
    where: Sequence[str] = ("residual",)

    def __post_init__(self) -> None:
        self.presets = _check_presets(self.presets)
        self.where = _check_where(self.where)
        self.choices: dict[str, dict[str, tuple]] = {p: {} for p in self.presets}
        for name, values in dict(self.fields).items():
            self._add_field(name, values)
        for p in self.presets:  # a spec field that can take one value only on a preset does not vary there
            own = _preset_keywords(p)
            self.choices[p] = {k: v for k, v in self.choices[p].items() if k in own or len(v) > 1}
        self.fields = {name: tuple(v) if v is not None else None for name, v in dict(self.fields).items()}

    def _add_field(self, name: str, values: Sequence[Any] | None) -> None:
        known = sorted({*_SPEC_FIELDS, *(k for p in PRESETS for k in _preset_keywords(p))})
        if name not in known:
            raise SpecError("fields", name, "is neither a spec field nor a preset keyword", known)
        if values is None:
            if name not in DEFAULT_VALUES:
                raise SpecError(name, None, "has no default values to search: give them")
            values = DEFAULT_VALUES[name]
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise SpecError(name, values, "give a non-empty list of values")
        takers = [p for p in self.presets if name in _preset_keywords(p) or
                  (name in _SPEC_FIELDS and not PRESETS[p]().stages)]
        if not takers:
            raise SpecError("fields", name, f"no preset of {list(self.presets)} takes it")
        for value in values:
            good = [p for p in takers if _valid(p, name, value)]
            if not good:
                allowed = FIELD_VALUES.get(name)
                raise SpecError(name, value, f"gives no valid spec for {', '.join(takers)}",
                                allowed if isinstance(allowed, (tuple, str)) else None)
            for p in good:
                self.choices[p][name] = (*self.choices[p].get(name, ()), value)

    @property
    def size(self) -> int:
        """How many (preset, values) specs the space holds (placements not counted)."""
        total = 0
        for p in self.presets:
            n = 1
            for values in self.choices[p].values():
                n *= len(values)
            total += n
        return total

    def placements(self, preset: str) -> tuple[str, ...]:
        """The ``where`` items a preset draws from (a kernel-target preset: default, and conv and selectors)."""
        if PRESETS[preset]().kind != "kernel":
            return tuple(self.where)
        return ("default", *(w for w in self.where if w != "default" and (w == "conv" or w not in PLACEMENTS)))

    def suggest(self, trial: Any, stage_sites: Sequence[str] = ()) -> Draw:
        """Draw one point with an Optuna trial (``trial.suggest_categorical``): the preset, then each of its
        fields (parameters ``<preset>.<field>``, values as their repr), then its placement."""
        preset = trial.suggest_categorical("preset", list(self.presets))
        values = {name: ast.literal_eval(trial.suggest_categorical(f"{preset}.{name}", [repr(v) for v in choices]))
                  for name, choices in self.choices[preset].items()}
        kernel = PRESETS[preset]().kind == "kernel"
        where = trial.suggest_categorical("kernel_where" if kernel else "where", list(self.placements(preset)))
        selector: Any = None if where == "default" else where
        if where == "stages":
            subsets = stage_subsets(stage_sites)
            chosen = trial.suggest_categorical("stages", subsets)
            where, selector = f"stages {chosen}", [f"stage:{s}" for s in chosen.split("+")]
        return Draw(preset, values, _make(preset, values), spec_text(preset, values), where, selector)


def stage_subsets(sites: Sequence[str]) -> list[str]:
    """The non-empty subsets of the stage sites, each as ``a+b``."""
    if not sites:
        raise SpecError("where", "stages", "the model has no stage sites")
    if len(sites) > MAX_STAGE_SITES:
        raise SpecError("where", "stages", f"the model has {len(sites)} stage sites, more than "
                        f"{MAX_STAGE_SITES}: name the stages with globs ('stage:layer*') instead")
    return ["+".join(c) for n in range(1, len(sites) + 1) for c in itertools.combinations(sites, n)]


def _valid(preset: str, name: str, value: Any) -> bool:
    try:
        _make(preset, {name: value})
    except (DynattnError, TypeError, ValueError):
        return False
    return True


def _check_presets(presets: Sequence[str] | str) -> tuple[str, ...]:
    items = [p.strip() for p in presets.split(",")] if isinstance(presets, str) else list(presets)
    if not items:
        raise SpecError("presets", (), "the search space is empty: name at least one preset", tuple(PRESETS))
    for p in items:
        if p not in PRESETS:
            raise SpecError("presets", p, "unknown preset", tuple(PRESETS))
    return tuple(dict.fromkeys(items))


def _check_where(where: Sequence[str] | str) -> tuple[str, ...]:
    items = [w.strip() for w in where.split(",")] if isinstance(where, str) else list(where)
    if not items:
        raise SpecError("where", (), "no placement to search: name at least one", PLACEMENTS)
    for w in items:
        selector = isinstance(w, str) and (w.startswith("re:") or any(c in w for c in "*?[.:"))
        if w not in PLACEMENTS and not selector:
            raise SpecError("where", w, "unknown placement (or give a glob / re: selector)", PLACEMENTS)
    return tuple(dict.fromkeys(items))
