"""A study survives its process: a worker SIGKILLed mid-trial leaves complete trials as they were, and the
same command resumes to the total (the killed trial FAIL, with its reason, never counted); two worker
processes share one study with distinct trial numbers. Real subprocesses, a toy task (tests/search_toy.py)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

TESTS = Path(__file__).resolve().parent
RUN = """
import sys
from dynattn.search import SearchSpace, search
from search_toy import objective_that_hangs, task
space = SearchSpace(presets=("se", "eca", "cbam"), fields={"reduction": (4, 8)})
search(objective_that_hangs, task=task(), space=space,
       trials=int(sys.argv[1]), out=sys.argv[2], study="resume", progress=False, threads=1)
"""


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def _load(out: Path) -> "optuna.Study":
    return optuna.load_study(study_name="resume", storage=f"sqlite:///{out / 'study.db'}")


def test_a_sigkilled_run_resumes_to_the_total_without_rerunning(tmp_path):
    out, marker, log = tmp_path / "out", tmp_path / "hanging", tmp_path / "calls.log"
    proc = subprocess.Popen([sys.executable, "-c", RUN, "3", str(out)],
                            env=_env(TOY_HANG=str(marker), TOY_LOG=str(log)))
    deadline = time.monotonic() + 120
    while not marker.exists():  # trial 2 has started: trials 0 and 1 are complete
        assert proc.poll() is None and time.monotonic() < deadline, "the first run ended before it hung"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {t.number: t for t in _load(out).get_trials()}
    assert [t.state.name for t in before.values()] == ["COMPLETE", "COMPLETE", "RUNNING"]

    subprocess.run([sys.executable, "-c", RUN, "3", str(out)], env=_env(TOY_LOG=str(log)), check=True, timeout=300)
    after = {t.number: t for t in _load(out).get_trials()}
    assert [t.state.name for t in after.values()].count("COMPLETE") == 3
    for n in (0, 1):  # unchanged: the same values, finished at the same moment
        assert (after[n].values, after[n].datetime_complete) == (before[n].values, before[n].datetime_complete)
    assert after[2].state.name == "FAIL" and f"pid {proc.pid}" in after[2].user_attrs["fail_reason"]
    calls = [line.split() for line in log.read_text().splitlines()]
    second = [int(n) for pid, n in calls if int(pid) != proc.pid]
    assert all(n >= 3 for n in second) and len(second) <= len(after) - 3  # no trial of the first run ran again


def test_two_workers_share_one_study_with_distinct_trial_numbers(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "dynattn", "search", "--task", "search_toy:task", "--presets", "se,eca,cbam",
           "--vary", "reduction=4,8,16", "--trials", "4", "--workers", "2", "--study", "resume", "--out", str(out)]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = _load(out).get_trials()
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 4 and len({t.number for t in trials}) == len(trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both processes ran trials
    assert "[worker 0]" in done.stderr and "[worker 1]" in done.stderr


def test_ctrl_c_marks_the_running_trial_failed_and_stops_cleanly(tmp_path):
    out, marker = tmp_path / "out", tmp_path / "hanging"
    cmd = [sys.executable, "-m", "dynattn", "search", "--task", "search_toy:task", "--model",
           "search_toy:hanging_model", "--trials", "2", "--study", "resume", "--out", str(out)]
    proc = subprocess.Popen(cmd, env=_env(TOY_HANG=str(marker)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip().endswith("dynattn: interrupted"), err[-3000:]
    [trial] = _load(out).get_trials()
    assert trial.state.name == "FAIL" and trial.user_attrs["fail_reason"] == "interrupted (Ctrl-C)"
    assert "interrupted (Ctrl-C)" in (out / "results.md").read_text()
