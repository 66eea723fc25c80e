"""The cost model's calibration and the profile cache: what one process measured, the next reads (the cost model's
constants, benchmark mode's choices); a corrupt, foreign or unwritable cache never raises; two processes writing
at once leave one complete file; ``DYNATTN_COST_MODEL`` picks cached, fresh or fitted constants; torch.compile
traces a calibrated profile as one constant.

The tests steer through ``DYNATTN_CACHE_DIR`` (a tmp_path each) and ``DYNATTN_COST_MODEL``, and through the
functions' arguments. The cost model's per-process memo is keyed by source, device, dtype, threads and cache
directory, so a tmp_path gives a fresh resolution in this process too; what must be a fresh process (reading
another process's file, the warning of an invalid value) runs in a subprocess. Calibrations run at one thread
(``threads=1``, ``OMP_NUM_THREADS=1`` in subprocesses): 3 to 6 s each on a 2-core CPU, five in all (a fresh
interpreter that imports dynattn costs about 3 s more). ``DYNATTN_CALIBRATION_S`` (set for this module) bounds each
calibration to about a second: these tests check where a profile goes, not how good it is.
"""

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch._dynamo
from torch._dynamo.testing import CompileCounter

from dynattn import DynamicConv2d
from dynattn.dynamic_conv import (
    COST_MODELS,
    CostModel,
    calibrate,
    calibrated_model,
    clear_measured_strategies,
    cost_model,
    profile_cache,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _short_calibrations(monkeypatch):
    monkeypatch.setenv("DYNATTN_CALIBRATION_S", "0.5")
F32 = torch.float32
# a profile no calibration would measure: constants that show where a model came from
DISTINCT = dataclasses.replace(COST_MODELS[1], im2col=123.0, macs_per_s=1.234e11, kernel_mix=(11.0, 77.0))


def _profile(model: CostModel, seconds: float = 9.876) -> dict:
    """A cost-model profile as calibrated_model stores it."""
    return {"constants": dataclasses.asdict(model), "seconds": seconds}


def _as_json(model: CostModel) -> dict:
    """``model``'s constants as they read back from a JSON file (tuples as lists)."""
    return json.loads(json.dumps(dataclasses.asdict(model)))


def _files(directory: Path, pattern: str = "cost-model-*.json") -> list[Path]:
    return sorted(Path(directory).glob(pattern))


def _stamp(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def _env(cache: Path, source: str | None = None) -> dict[str, str]:
    """The environment of a subprocess: ``cache`` as the profile cache, ``source`` as DYNATTN_COST_MODEL (None:
    unset), one thread (a calibration of 2 s, and the same machine key in every process)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DYNATTN_", "PYTEST_"))}
    env.update(DYNATTN_CACHE_DIR=str(cache), DYNATTN_CALIBRATION_S="0.5", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    if source is not None:
        env["DYNATTN_COST_MODEL"] = source
    return env


def _run(code: str, env: dict[str, str], *args: str) -> str:
    """Run ``code`` in a fresh interpreter; its stdout (it must exit 0)."""
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _start(code: str, env: dict[str, str], *args: str) -> subprocess.Popen:
    """Start ``code`` in a fresh interpreter, which prints "ready" once it has imported dynattn and then waits for
    the file named by its last argument (``_WAIT_FOR_GO``): what follows runs at the same time as this process."""
    proc = subprocess.Popen([sys.executable, "-c", code, *args], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        _, err = proc.communicate(timeout=60)
        pytest.fail(f"the subprocess did not start: {line!r}\n{err}")
    return proc


def _finish(proc: subprocess.Popen) -> str:
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, err
    return out


# a subprocess's prologue: import (3 s), say so, wait for the parent's go
_WAIT_FOR_GO = """
import pathlib, sys, time
import dynattn.dynamic_conv
print("ready", flush=True)
while not pathlib.Path(sys.argv[-1]).exists():
    time.sleep(0.001)
"""

# a subprocess's cost model under the DYNATTN_COST_MODEL of its environment, as JSON
_PRINT_MODEL = """
import dataclasses, json
from dynattn.dynamic_conv import cost_model
print(json.dumps(dataclasses.asdict(cost_model())))
"""


# ------------------------------------------------------------------ 1. round trip


def test_store_then_load_returns_the_value_for_its_key_alone(monkeypatch, tmp_path):
    monkeypatch.setenv("DYNATTN_CACHE_DIR", str(tmp_path))
    key = profile_cache.machine_key("cpu", F32, 1)
    value = {"constants": [1.5, 2], "note": "ünïcode", "nested": {"a": None}}
    assert profile_cache.cache_dir() == tmp_path
    assert profile_cache.load("cost-model", key) is None
    assert profile_cache.store("cost-model", key, value) is True
    assert profile_cache.load("cost-model", key) == value
    assert len(_files(tmp_path)) == 1
    # other threads, another dtype, another kind: nothing stored for them
    assert profile_cache.load("cost-model", profile_cache.machine_key("cpu", F32, 2)) is None
    assert profile_cache.load("cost-model", profile_cache.machine_key("cpu", torch.float64, 1)) is None
    assert profile_cache.load("strategies", key) is None
    profile_cache.remove("cost-model", key)
    assert profile_cache.load("cost-model", key) is None and _files(tmp_path) == []
    profile_cache.remove("cost-model", key)  # removing what is not there: nothing happens


def test_calibrated_model_returns_the_stored_profile_without_calibrating(monkeypatch, tmp_path):
    monkeypatch.setenv("DYNATTN_CACHE_DIR", str(tmp_path))
    key = profile_cache.machine_key("cpu", F32, 1)
    assert profile_cache.store("cost-model", key, _profile(DISTINCT))
    (path,) = _files(tmp_path)
    before = _stamp(path)
    t0 = time.perf_counter()
    model = calibrated_model("cpu", F32, 1)
    elapsed = time.perf_counter() - t0
    assert model == DISTINCT and isinstance(model.kernel_mix, tuple)
    assert elapsed < 0.5, f"{elapsed:.2f} s: calibrated again?"
    assert _stamp(path) == before  # not rewritten: "seconds" is still the stored one
    assert profile_cache.load("cost-model", key)["seconds"] == 9.876


def test_a_calibrated_model_reads_back_equal(monkeypatch, tmp_path):
    # a measured model survives JSON exactly (its repr keys benchmark mode's choices across processes)
    monkeypatch.setenv("DYNATTN_CACHE_DIR", str(tmp_path))
    model, seconds = calibrate("cpu", F32, 1, budget_s=0.3)
    assert isinstance(model, CostModel) and seconds > 0
    assert profile_cache.store("cost-model", profile_cache.machine_key("cpu", F32, 1), _profile(model, seconds))
    read = calibrated_model("cpu", F32, 1)
    assert read == model and repr(read) == repr(model)


# ------------------------------------------------------------------ 2. corrupt or unwritable cache


_GARBAGE = b"\x00\xffnot json at all {"  # not even UTF-8
_CORRUPT = ("garbage", "empty", "truncated", "not a dict", "other format", "other key", "no format")


def _corrupt_contents(case: str, key: dict) -> bytes:
    """What a profile's file holds in a ``case`` of ``_CORRUPT``, for the machine key ``key``."""
    value = _profile(DISTINCT)
    good = json.dumps({"format": profile_cache.FORMAT, "key": key, "value": value}).encode()
    other_key = profile_cache.machine_key("cpu", torch.float64, 7)
    return {"garbage": _GARBAGE, "empty": b"", "truncated": good[:len(good) // 2], "not a dict": b"[1, 2, 3]",
            "other format": json.dumps({"format": 999, "key": key, "value": value}).encode(),
            "other key": json.dumps({"format": profile_cache.FORMAT, "key": other_key, "value": value}).encode(),
            "no format": json.dumps({"key": key, "value": value}).encode()}[case]


@pytest.mark.parametrize("case", _CORRUPT)
def test_a_corrupt_or_foreign_file_loads_as_none(monkeypatch, tmp_path, case):
    monkeypatch.setenv("DYNATTN_CACHE_DIR", str(tmp_path))
    key = profile_cache.machine_key("cpu", F32, 1)
    assert profile_cache.store("cost-model", key, _profile(DISTINCT))
    (path,) = _files(tmp_path)
    path.write_bytes(_corrupt_contents(case, key))
    assert profile_cache.load("cost-model", key) is None
    # and the next store replaces it with a good file
    assert profile_cache.store("cost-model", key, {"ok": 1})
    assert profile_cache.load("cost-model", key) == {"ok": 1} and _files(tmp_path) == [path]


def test_a_directory_in_the_files_place_loads_as_none(monkeypatch, tmp_path):
    monkeypatch.setenv("DYNATTN_CACHE_DIR", str(tmp_path))
    key = profile_cache.machine_key("cpu", F32, 1)
    assert profile_cache.store("cost-model", key, 1)
    (path,) = _files(tmp_path)
    path.unlink()
    path.mkdir()
    assert profile_cache.load("cost-model", key) is None
    assert profile_cache.store("cost-model", key, 2) is False  # cannot replace a directory: False, no exception
    profile_cache.remove("cost-model", key)
    assert list(tmp_path.glob(".*.tmp")) == []


def test_a_profile_of_wrong_values_is_measured_again_and_a_value_json_cannot_hold_is_not_stored(
        monkeypatch, tmp_path):
    monkeypatch.setenv("DYNATTN_CACHE_DIR", str(tmp_path))
    key = profile_cache.machine_key("cpu", F32, 1)
    for bad in ({"macs_per_s": "fast"}, {"kernel_mix": [1.0]}, {"im2col": float("nan")}, {"call_s": -1.0}):
        constants = {**_as_json(DISTINCT), **bad}
        assert profile_cache.store("cost-model", key, {"constants": constants, "seconds": 1.0})
        model = calibrated_model("cpu", F32, 1)
        assert isinstance(model.macs_per_s, float) and model.macs_per_s > 0 and len(model.kernel_mix) == 2
        assert profile_cache.load("cost-model", key)["constants"] != constants  # measured and rewritten
    assert profile_cache.store("cost-model", key, {"not json": object()}) is False


def test_deeply_nested_json_loads_as_none(monkeypatch, tmp_path):
    monkeypatch.setenv("DYNATTN_CACHE_DIR", str(tmp_path))
    key = profile_cache.machine_key("cpu", F32, 1)
    assert profile_cache.store("cost-model", key, 1)
    (path,) = _files(tmp_path)
    path.write_text("[" * 100_000)
    assert profile_cache.load("cost-model", key) is None


def test_calibrated_model_recalibrates_over_a_corrupt_file_and_rewrites_it(monkeypatch, tmp_path):
    monkeypatch.setenv("DYNATTN_CACHE_DIR", str(tmp_path))
    key = profile_cache.machine_key("cpu", F32, 1)
    assert profile_cache.store("cost-model", key, _profile(DISTINCT))
    (path,) = _files(tmp_path)
    path.write_bytes(_GARBAGE)
    model = calibrated_model("cpu", F32, 1)  # a real calibration, a few seconds
    assert isinstance(model, CostModel) and model != DISTINCT
    stored = profile_cache.load("cost-model", key)
    assert stored["constants"] == _as_json(model) and stored["seconds"] > 0
    assert _files(tmp_path) == [path] and list(tmp_path.glob(".*.tmp")) == []


def test_an_unwritable_cache_dir_still_gives_a_model(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("DYNATTN_CACHE_DIR", str(blocker / "cache"))
    key = profile_cache.machine_key("cpu", F32, 1)
    assert profile_cache.store("cost-model", key, _profile(DISTINCT)) is False
    assert profile_cache.load("cost-model", key) is None
    profile_cache.remove("cost-model", key)
    model = calibrated_model("cpu", F32, 1)  # calibrates (a few seconds), fails to store, says nothing
    assert isinstance(model, CostModel) and model.macs_per_s > 0
    assert blocker.read_text() == "not a directory" and sorted(tmp_path.iterdir()) == [blocker]


# ------------------------------------------------------------------ 3. concurrent writers

_RACE_KEY = {"test": "race"}
_PAD = 20_000  # characters per value: a write that takes a while, so that a torn file would show

_STORE_200 = _WAIT_FOR_GO + """
from dynattn.dynamic_conv import profile_cache
for i in range(200):
    assert profile_cache.store("race", {"test": "race"}, {"writer": "child", "i": i, "pad": "c" * int(sys.argv[1])})
"""


def _check_race_value(value) -> None:
    assert isinstance(value, dict) and value["writer"] in ("parent", "child") and 0 <= value["i"] < 200
    assert value["pad"] == value["writer"][0] * _PAD


def test_two_processes_storing_at_once_leave_one_whole_file(monkeypatch, tmp_path):
    # this process and a subprocess each store 200 values for one kind and key; this one reads after each store
    monkeypatch.setenv("DYNATTN_CACHE_DIR", str(tmp_path))
    go = tmp_path.parent / f"{tmp_path.name}-go"
    child = _start(_STORE_200, _env(tmp_path), str(_PAD), str(go))
    go.touch()
    try:
        for i in range(200):
            assert profile_cache.store("race", _RACE_KEY, {"writer": "parent", "i": i, "pad": "p" * _PAD})
            _check_race_value(profile_cache.load("race", _RACE_KEY))  # never half a file, never None
    finally:
        _finish(child)
        go.unlink()
    final = profile_cache.load("race", _RACE_KEY)
    _check_race_value(final)
    assert final["i"] == 199  # the last rename was one writer's last value
    assert len(_files(tmp_path, "race-*.json")) == 1
    assert list(tmp_path.glob(".*.tmp")) == [] and len(list(tmp_path.iterdir())) == 1


def test_two_processes_calibrating_at_once_replace_the_cached_profile(monkeypatch, tmp_path):
    # DYNATTN_COST_MODEL=calibrate here and in a subprocess, same cache dir, at the same time: each measures afresh
    # whatever is cached, and one of the two profiles is left
    monkeypatch.setenv("DYNATTN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("DYNATTN_COST_MODEL", "calibrate")
    key = profile_cache.machine_key("cpu", F32, 1)  # the subprocess runs at one thread too: the same machine key
    assert profile_cache.store("cost-model", key, _profile(DISTINCT))
    (path,) = _files(tmp_path)
    before = _stamp(path)
    go = tmp_path.parent / f"{tmp_path.name}-go"
    child = _start(_WAIT_FOR_GO + _PRINT_MODEL, _env(tmp_path, "calibrate"), str(go))
    go.touch()
    try:
        mine = cost_model(threads=1)  # a few seconds, as the subprocess's
    finally:
        theirs = json.loads(_finish(child))
        go.unlink()
    assert mine != DISTINCT and theirs != _as_json(DISTINCT)
    assert _files(tmp_path) == [path] and _stamp(path) != before
    stored = profile_cache.load("cost-model", key)
    assert stored is not None and stored["constants"] in (_as_json(mine), theirs) and stored["seconds"] != 9.876
    assert list(tmp_path.glob(".*.tmp")) == []


# ------------------------------------------------------------------ 4. DYNATTN_COST_MODEL

_FITTED_THEN_BOGUS = """
import dataclasses, json, os, sys, warnings
import torch
from dynattn.dynamic_conv import COST_MODELS, cost_model
os.environ["DYNATTN_COST_MODEL"] = "fitted"
os.environ["DYNATTN_CACHE_DIR"] = sys.argv[1]  # an empty directory
threads = torch.get_num_threads()
print(json.dumps({"threads": threads, "is_fitted": cost_model() is COST_MODELS[threads]}))
os.environ["DYNATTN_COST_MODEL"] = "bogus"
os.environ["DYNATTN_CACHE_DIR"] = sys.argv[2]  # the cache of the cached profile
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    models = [cost_model() for _ in range(3)]
print(json.dumps({"warnings": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)],
                  "same": all(m is models[0] for m in models), "constants": dataclasses.asdict(models[0])}))
"""


def test_cost_model_source_follows_the_environment(monkeypatch, tmp_path):
    cache, empty = tmp_path / "cache", tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("DYNATTN_CACHE_DIR", str(cache))
    monkeypatch.delenv("DYNATTN_COST_MODEL", raising=False)
    # unset, nothing cached: calibrates (a few seconds) and caches (this process: the memo is keyed by the cache dir)
    first = cost_model(threads=1)
    assert first not in COST_MODELS.values()
    (path,) = _files(cache)
    assert profile_cache.load("cost-model", profile_cache.machine_key("cpu", F32, 1))["constants"] == _as_json(first)
    before = _stamp(path)

    # unset, another process: reads the profile, writes nothing
    assert json.loads(_run(_PRINT_MODEL, _env(cache))) == _as_json(first)
    assert _stamp(path) == before and _files(cache) == [path]

    # fitted: the table's entry, no file; an invalid value: one RuntimeWarning, and the cached profile
    out = _run(_FITTED_THEN_BOGUS, _env(cache), str(empty), str(cache)).splitlines()
    fitted, bogus = json.loads(out[0]), json.loads(out[1])
    assert fitted == {"threads": 1, "is_fitted": True}
    assert list(empty.iterdir()) == []
    assert len(bogus["warnings"]) == 1 and "'bogus'" in bogus["warnings"][0], bogus["warnings"]
    assert bogus["same"] and bogus["constants"] == _as_json(first)
    assert _stamp(path) == before


# ------------------------------------------------------------------ 5. benchmark mode

_BENCHMARK_AGAIN = """
import json, sys
import torch
from dynattn import DynamicConv2d
torch.set_num_threads(int(sys.argv[1]))
DynamicConv2d.benchmark = True
torch.manual_seed(0)
layer = DynamicConv2d(16, 16, 3, padding=1).eval()
run, calls = layer._run_strategy, []
def counted(strategy, *args, **kwargs):
    calls.append(strategy)
    return run(strategy, *args, **kwargs)
layer._run_strategy = counted
with torch.no_grad():
    y = layer(torch.randn(2, 16, 8, 8))
print(json.dumps({"calls": calls, "shape": list(y.shape)}))
"""


def _benchmark_once() -> list[str]:
    """One call of a benchmark-mode layer in this process; the strategies _run_strategy ran."""
    torch.manual_seed(0)
    layer = DynamicConv2d(16, 16, 3, padding=1).eval()
    run, calls = layer._run_strategy, []

    def counted(strategy, *args, **kwargs):
        calls.append(strategy)
        return run(strategy, *args, **kwargs)

    layer._run_strategy = counted  # an instance attribute of the layer under test
    saved = DynamicConv2d.benchmark
    DynamicConv2d.benchmark = True  # the documented switch (a class attribute)
    try:
        with torch.no_grad():
            layer(torch.randn(2, 16, 8, 8))
    finally:
        DynamicConv2d.benchmark = saved
    return calls


def test_benchmark_choices_persist_across_processes(monkeypatch, tmp_path):
    monkeypatch.setenv("DYNATTN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("DYNATTN_COST_MODEL", "fitted")
    clear_measured_strategies()  # this process's choices (of other tests too) and the files of tmp_path (none)
    calls = _benchmark_once()
    assert len(calls) > 1  # timed: a warm-up and timed calls per candidate, then the real call
    (path,) = _files(tmp_path, "strategies-*.json")
    stored = profile_cache.load("strategies", profile_cache.machine_key("cpu", F32, torch.get_num_threads()))
    assert isinstance(stored, dict) and stored["model"] == repr(cost_model()) and len(stored["choices"]) == 1
    (choice,) = stored["choices"].values()
    assert choice in ("kernel", "blocked", "output") and calls[-1] == choice
    before = _stamp(path)

    # another process, same cache and threads: the choice is read, nothing is timed
    out = json.loads(_run(_BENCHMARK_AGAIN, _env(tmp_path, "fitted"), str(torch.get_num_threads())))
    assert out == {"calls": [choice], "shape": [2, 16, 8, 8]}
    assert _stamp(path) == before

    # in this process it is remembered too; cleared, it is timed again
    assert _benchmark_once() == [choice]
    clear_measured_strategies()
    assert _files(tmp_path, "strategies-*.json") == []
    assert len(_benchmark_once()) > 1
    clear_measured_strategies()
    assert _files(tmp_path, "strategies-*.json") == []


# ------------------------------------------------------------------ 6. torch.compile


def test_fullgraph_compile_under_a_cached_profile(monkeypatch, tmp_path):
    monkeypatch.setenv("DYNATTN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("DYNATTN_COST_MODEL", "cached")
    threads = torch.get_num_threads()
    profile = dataclasses.replace(COST_MODELS[max(t for t in COST_MODELS if t <= threads)], im2col=123.0,
                                  kernel_mix=(11.0, 77.0))
    assert profile_cache.store("cost-model", profile_cache.machine_key("cpu", F32, threads), _profile(profile))
    assert cost_model(device="cpu", dtype=F32) == profile  # the stored profile is in force: no calibration
    torch.manual_seed(0)
    layer = DynamicConv2d(8, 8, 3, padding=1).eval()
    counter = CompileCounter()
    torch._dynamo.reset()
    try:
        compiled = torch.compile(layer, fullgraph=True, dynamic=True, backend=counter)
        with torch.no_grad():
            for batch in (2, 3, 5):
                x = torch.randn(batch, 8, 6, 6)
                torch.testing.assert_close(compiled(x), layer(x))
    finally:
        torch._dynamo.reset()
    assert counter.frame_count == 1


def test_a_first_call_under_inference_mode_and_autocast_calibrates(monkeypatch, tmp_path):
    """Calibration times training steps too: it runs with autograd on and autocast off whatever the caller's
    context, and the call that triggered it gives the layer's output."""
    monkeypatch.setenv("DYNATTN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("DYNATTN_COST_MODEL", "cached")
    layer = DynamicConv2d(8, 8, 3, padding=1).eval()
    x = torch.randn(2, 8, 6, 6)
    with torch.inference_mode(), torch.autocast("cpu", enabled=True):
        got = layer(x)
    assert len(_files(tmp_path)) == 1  # calibrated (under the caller's contexts) and cached
    with torch.no_grad():
        want = layer(x)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, rtol=0.05, atol=0.05)


def test_page_faults_are_charged_on_the_large_blocks_a_call_allocates():
    """A training step's B mixed kernels (and their gradient) are allocated per call: past ``fresh_above`` bytes
    the model charges their page faults at ``fresh_bytes_per_s``; inference writes them to a reused buffer, and a
    block under the threshold comes from the allocator's free lists."""
    from dynattn.dynamic_conv.costs import ConvProblem, modelled_costs

    slow, fast = (dataclasses.replace(COST_MODELS[1], fresh_bytes_per_s=r) for r in (1e9, 1e14))
    per_byte = round(1e15 / 1e9) - round(1e15 / 1e14)  # femtoseconds the slow rate adds per faulted byte

    def extra(problem: ConvProblem) -> dict[str, int]:
        a, b = modelled_costs(problem, slow, columns=False), modelled_costs(problem, fast, columns=False)
        return {s: a[s] - b[s] for s in a}

    big = ConvProblem(512, 512, 9, 4, 16, 8, training=True)  # 8 x 2.4M weights x 4 bytes = 75 MB of kernels
    assert extra(big)["kernel"] == 2 * 8 * big.weights * 4 * per_byte  # the kernels and their gradient
    assert extra(big)["output"] == 0  # its K outputs (4 x 8 x 512 x 16 values) are small
    assert extra(dataclasses.replace(big, training=False))["kernel"] == 0
    assert extra(dataclasses.replace(big, batch=1))["kernel"] == 0  # 9.4 MB: under the threshold
    wide = ConvProblem(64, 64, 9, 4, 56 * 56, 32, training=True)  # output mixing's K outputs: 103 MB
    assert extra(wide)["output"] == 2 * 4 * 32 * 64 * 56 * 56 * 4 * per_byte


def test_the_fit_finds_constants_that_rank_probes_as_timed():
    """Probe times made by known constants (kernel mixing's cost per weight 3x the table's, fresh blocks at
    2 GB/s): fitted from the table, the constants rank every probe's candidates as those times do."""
    from dynattn.dynamic_conv.calibration import PROBES, _candidates, _objective, fit
    from dynattn.dynamic_conv.costs import modelled_costs

    start = COST_MODELS[1]
    truth = dataclasses.replace(start, kernel_mix=tuple(3 * v for v in start.kernel_mix), fresh_bytes_per_s=2e9)
    cells = []
    for probe in PROBES:
        p = probe.problem(4)
        cells.append((p, {(s, f): modelled_costs(p, truth, columns=f)[s] / 1e15 for s, f in _candidates(p, start)
                          if s in modelled_costs(p, truth)}))
    assert _objective(start, cells)[0] > 0  # the table misjudges some probe
    fitted = fit(start, cells)
    assert _objective(fitted, cells)[0] == 0
