"""dynattn.search: the space is checked before any trial, every draw is a valid spec, failed trials are
recorded with their reason and the study goes on, the CLI writes its four files, and a multi-objective
study reports its Pareto set. A toy task (tests/search_toy.py) keeps each trial under a second."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

optuna = pytest.importorskip("optuna")

import dynattn  # noqa: E402
from dynattn import SpecError, build, parse_spec  # noqa: E402
from dynattn.cli import main  # noqa: E402
from dynattn.search import SearchSpace, search  # noqa: E402
from dynattn.search.space import stage_subsets  # noqa: E402

TESTS = Path(__file__).resolve().parent


def _builds(spec: dynattn.AttnSpec) -> None:
    if spec.kind == "kernel":
        dynattn.DynamicConv2d(16, 16, 3, padding=1, spec=spec)(torch.randn(2, 16, 8, 8))
    else:
        build(spec, channels=16)(torch.randn(2, 16, 8, 8))


def test_a_bad_space_is_one_line_naming_it_and_runs_no_trial(tmp_path, capsys):
    assert main(["search", "--presets", "se,cbma", "--trials", "2", "--out", str(tmp_path)]) == 2
    err = " ".join(line.strip() for line in capsys.readouterr().err.splitlines())  # one message, wrapped
    assert err.startswith("dynattn: error:") and "'cbma'" in err and "did you mean 'cbam'?" in err
    assert not any(tmp_path.iterdir())  # no study, no trial


@pytest.mark.parametrize("space, culprit", [
    (dict(presets=()), "empty"),
    (dict(fields={"reductoin": None}), "did you mean 'reduction'?"),
    (dict(presets=("se",), fields={"gate": ("sigmod",)}), "did you mean 'sigmoid'?"),
    (dict(where=("residul",)), "did you mean 'residual'?"),
    (dict(presets=("eca",), fields={"experts": (2, 4)}), "experts"),
])
def test_the_space_is_checked_when_made(space, culprit):
    with pytest.raises(SpecError, match=culprit.replace("?", r"\?")):
        SearchSpace(**space)


def test_every_draw_is_a_spec_that_parses_back_and_builds():
    space = SearchSpace(presets=("se", "eca", "cbam", "dyconv"), fields={"reduction": None, "kernel_size": (3, 7),
                        "gate": None}, where=("residual", "stages", "conv"))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        draw = space.suggest(study.ask(), stage_sites=("layer1", "layer2"))
        assert parse_spec(draw.text) == draw.spec
        _builds(draw.spec)
        seen.add((draw.preset, draw.where.split()[0]))
        if draw.preset == "dyconv":
            assert draw.where in ("conv", "default")  # a dynamic conv replaces convs: no residual placement
    assert {p for p, _ in seen} == {"se", "eca", "cbam", "dyconv"} and ("se", "stages") in seen
    assert stage_subsets(("a", "b")) == ["a", "b", "a+b"]


def _toy(tmp_path, **kwargs):
    from search_toy import task  # tests/ is on sys.path (pytest's rootdir-relative import)

    return search(task=task(), out=tmp_path, study="t", progress=False, threads=1, **kwargs)


def test_a_failing_objective_nan_or_oom_is_recorded_and_the_study_goes_on(tmp_path):
    calls = []

    def objective(model, trial):
        calls.append(trial.number)
        if len(calls) == 1:
            raise RuntimeError("boom")
        if len(calls) == 2:
            return math.nan
        if len(calls) == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return float(len(calls))

    result = _toy(tmp_path, objective=objective, trials=2, space=SearchSpace(presets=("se", "eca", "cbam")))
    trials = result.study.get_trials()
    states = [t.state.name for t in trials]
    assert states[:3] == ["FAIL"] * 3 and states.count("COMPLETE") == 2
    assert trials[0].user_attrs["fail_reason"] == "RuntimeError: boom"
    assert trials[1].user_attrs["fail_reason"] == "accuracy is nan (not finite)"
    assert trials[2].user_attrs["fail_reason"].startswith("out of memory: CUDA out of memory")
    text = (tmp_path / "results.md").read_text()
    assert "Trials not complete" in text and "RuntimeError: boom" in text
    assert result.best_spec == parse_spec((tmp_path / "best_spec.txt").read_text().strip())


def test_a_pruned_trial_is_not_counted(tmp_path):
    def objective(model, trial):
        if trial.number == 0:
            raise optuna.TrialPruned("too slow")
        return 1.0

    result = _toy(tmp_path, objective=objective, trials=1, space=SearchSpace(presets=("se",)))
    assert [t.state.name for t in result.study.get_trials()] == ["PRUNED", "COMPLETE"]


def test_the_cli_writes_four_files_whose_best_specs_parse_and_build(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    out = tmp_path / "out"
    argv = ["search", "--task", "search_toy:task", "--presets", "se,eca,cbam", "--where", "residual,stages",
            "--vary", "reduction=4,8", "--trials", "3", "--study", "cli", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["best_spec.txt", "results.md", "results.png", "study.db"]
    lines = (out / "best_spec.txt").read_text().splitlines()
    assert len(lines) == 1
    for line in lines:
        _builds(parse_spec(line))
    study = optuna.load_study(study_name="cli", storage=f"sqlite:///{out / 'study.db'}")
    complete = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert len(complete) == 3 and all(t.user_attrs["sites"] for t in complete)
    assert f"| 1 | {study.best_trial.number}" in (out / "results.md").read_text()
    assert f"best: {lines[0]}" in capsys.readouterr().out


def test_a_multi_objective_study_reports_its_pareto_set(tmp_path):
    result = _toy(tmp_path, objectives="accuracy,params", trials=3,
                  space=SearchSpace(presets=("se", "eca", "cbam"), fields={"reduction": (4, 16)}))
    pareto = result.study.best_trials
    lines = (tmp_path / "best_spec.txt").read_text().splitlines()
    assert sorted(lines) == sorted({t.user_attrs["spec"] for t in pareto})
    assert [parse_spec(line) for line in lines] == result.best_specs
    text = (tmp_path / "results.md").read_text()
    assert "Pareto set first" in text and text.count("* |") == len(pareto)
    assert (tmp_path / "results.png").stat().st_size > 5000


def test_optuna_is_imported_only_when_a_search_runs():
    code = ("import sys, dynattn, dynattn.cli, dynattn.search; from dynattn.cli import _parser; _parser(); "
            "assert 'optuna' not in sys.modules, 'optuna imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
