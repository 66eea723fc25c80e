"""Long runs and many callers: deterministic training, resuming from a checkpoint, worker processes
(DataLoader workers, spawn-started processes), threads sharing one model, memory under ever-changing input
sizes, and deterministic algorithms for every preset."""

import concurrent.futures
import io
import multiprocessing
import os

import pytest
import torch
from torch import nn

from dynattn import AttnSpec, DynamicConv2d, TemperatureSchedule, build, get_spec, list_presets
from dynattn.temperature import temperature_buffers
from graph_passes import insert_attention


@pytest.fixture
def deterministic():
    """``torch.use_deterministic_algorithms(True)`` for one test, the previous setting restored after it."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)


class Net(nn.Module):
    """A small CNN: a conv, a DyConv, CBAM, dropout (so training draws from the global RNG), a linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.dyn = DynamicConv2d(16, 16, 3, padding=1, spec=AttnSpec.dyconv())
        self.cbam = build(AttnSpec.cbam(reduction=4), channels=16)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        x = self.cbam(torch.relu(self.dyn(torch.relu(self.stem(x)))))
        return self.head(self.drop(x.mean(dim=(2, 3))))


def _trainer(seed: int = 0):
    """A model, its optimizer, LR schedule and temperature annealing (30 -> 1 over 4 steps), built from ``seed``."""
    torch.manual_seed(seed)
    model = Net()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    return model, opt, sched, TemperatureSchedule(model, start=30, end=1, steps=4)


def _steps(model, opt, sched, temperature, n: int) -> None:
    """``n`` training steps on batches drawn from the global RNG (as an unseeded sampler would)."""
    model.train()
    for _ in range(n):
        x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        sched.step()
        temperature.step()


def _assert_bitwise_equal(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    unequal = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not unequal, unequal


def test_seeded_runs_are_bitwise_equal(deterministic):
    runs = []
    for _ in range(2):
        model, opt, sched, temperature = _trainer()
        _steps(model, opt, sched, temperature, 4)
        runs.append(model)
    _assert_bitwise_equal(*runs)
    assert not torch.equal(runs[0].dyn.expert_weights, _trainer()[0].dyn.expert_weights)  # it did train


def test_resumed_run_equals_the_uninterrupted_one(deterministic):
    """Saved at step 3 of 7 (model, optimizer, LR schedule, temperature schedule, RNG) into a checkpoint and
    resumed in fresh objects, a DyConv network with its temperature annealing ends bitwise equal to the run
    that was never interrupted, temperature buffers included."""
    model, opt, sched, temperature = _trainer()
    _steps(model, opt, sched, temperature, 7)

    model_a, opt_a, sched_a, temperature_a = _trainer()
    _steps(model_a, opt_a, sched_a, temperature_a, 3)
    buffer = io.BytesIO()
    torch.save({"model": model_a.state_dict(), "opt": opt_a.state_dict(), "sched": sched_a.state_dict(),
                "temperature": temperature_a.state_dict(), "rng": torch.get_rng_state()}, buffer)
    del model_a, opt_a, sched_a, temperature_a

    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    resumed, opt_b, sched_b, temperature_b = _trainer(seed=123)  # other weights, RNG moved on: all restored below
    resumed.load_state_dict(state["model"])
    opt_b.load_state_dict(state["opt"])
    sched_b.load_state_dict(state["sched"])
    temperature_b.load_state_dict(state["temperature"])
    torch.set_rng_state(state["rng"])
    assert float(resumed.dyn.temperature) == temperature_b.value == 30 + (1 - 30) * 3 / 4
    _steps(resumed, opt_b, sched_b, temperature_b, 4)
    _assert_bitwise_equal(resumed, model)
    assert [float(t) for t in temperature_buffers(resumed).values()] == [1.0]


class Block(nn.Module):
    """A residual block (module level: a spawned process unpickles it by its qualified name)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)) + x)


def _is_3x3(node, module) -> bool:
    return module.kernel_size == (3, 3)


def _rewritten_model():
    """A small ResNet-like model with CBAM inserted before its residual add and DyConv in place of its 3x3 conv."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), Block())
    model = insert_attention(model, AttnSpec.cbam(reduction=2), where="residual")
    return insert_attention(model, AttnSpec.dyconv(), where=_is_3x3).eval()


def _modules() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "built": build(get_spec("fca"), channels=16).eval(),
        "dynamic conv": DynamicConv2d(8, 8, 3, padding=1, spec=AttnSpec.odconv()).eval(),
        "rewritten": _rewritten_model(),
    }


def _inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"built": torch.randn(2, 16, 14, 14, generator=g), "dynamic conv": torch.randn(2, 8, 9, 7, generator=g),
            "rewritten": torch.randn(2, 3, 12, 12, generator=g)}


def _run_all(modules: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """Each module run on its input; in a child process, on modules unpickled there."""
    with torch.no_grad():
        return {name: module(_inputs()[name]) for name, module in modules.items()}


class _Applied(torch.utils.data.Dataset):
    """Item i: the modules' outputs on input seed i, computed in the DataLoader worker that loads it."""

    def __init__(self, modules):
        self.modules = modules

    def __len__(self):
        return 4

    def __getitem__(self, i):
        with torch.no_grad():
            return {name: module(_inputs(i)[name]) for name, module in self.modules.items()}


def test_modules_run_in_dataloader_workers():
    modules = _modules()
    loader = torch.utils.data.DataLoader(_Applied(modules), batch_size=None, num_workers=2)
    for i, got in enumerate(loader):
        want = _Applied(modules)[i]
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=0, atol=0)


def test_modules_pickle_into_a_spawned_process():
    """A built module, a DynamicConv2d and a model rewritten by insert_attention, pickled into a process
    started by spawn (a fresh interpreter: nothing inherited), give there the parent's outputs."""
    modules = _modules()
    assert sum(isinstance(m, DynamicConv2d) for m in modules["rewritten"].modules()) == 2  # both 3x3 convs
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        got = pool.submit(_run_all, modules).result(timeout=120)
    want = _run_all(modules)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=0)


def _fca_dyconv_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        DynamicConv2d(8, 16, 3, padding=1, spec=AttnSpec.dyconv()), nn.ReLU(),
        build(get_spec("fca"), channels=16),
        DynamicConv2d(16, 16, 3, padding=1, spec=AttnSpec.odconv()),
    ).eval()


def test_threads_sharing_one_model_match_serial_outputs():
    """8 threads calling one model (FcaNet's DCT filters and the dynamic convs' strategy memo are per-size
    caches) on inputs of several sizes at once give the serial outputs."""
    model = _fca_dyconv_model()
    sizes = [(1 + i % 3, 7 + i, 14 - i) for i in range(8)]
    inputs = [torch.randn(b, 8, h, w, generator=torch.Generator().manual_seed(i)) for i, (b, h, w) in enumerate(sizes)]

    def call(x):
        with torch.no_grad():
            return [model(x) for _ in range(5)]

    serial = [call(x) for x in inputs]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        threaded = list(pool.map(call, inputs))
    for got, want in zip(threaded, serial):
        for out, expected in zip(got, want):
            torch.testing.assert_close(out, expected, rtol=0, atol=0)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads the resident set from /proc (Linux)")
def test_memory_stays_flat_over_many_input_sizes():
    """150 distinct input sizes through FcaNet and dynamic convs (each keeps per-size caches, bounded): after a
    warm-up over 12 other sizes, the resident memory grows by less than 16 MB (measured: under 1 MB; a cache
    that kept every size, or a leak per call, grows with the sizes)."""
    model = _fca_dyconv_model()
    sizes = [(h, w) for h in range(6, 21) for w in range(6, 16)]
    with torch.no_grad():
        for h, w in [(h, w) for h in range(21, 25) for w in range(16, 19)]:
            model(torch.randn(1, 8, h, w))
        before = _rss_mb()
        for h, w in sizes:
            model(torch.randn(1, 8, h, w))
        grown = _rss_mb() - before
    assert len(set(sizes)) == 150
    assert grown < 16, f"resident memory grew {grown:.1f} MB over 150 input sizes"
    assert len(model[2].pool_dct._filters) <= 8  # FcaNet's filter cache: bounded


@pytest.mark.parametrize("name", list_presets())
def test_deterministic_algorithms_run_every_preset(name, deterministic):
    """Under ``torch.use_deterministic_algorithms(True)`` every preset runs forward and backward, and twice
    gives bitwise the same outputs and gradients."""
    spec = get_spec(name)
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        module = (DynamicConv2d(16, 16, 3, padding=1, spec=spec) if spec.kind == "kernel"
                  else build(spec, channels=16)).train()
        x = torch.randn(2, 16, 9, 7, requires_grad=True)
        out = module(x)
        out.square().sum().backward()
        results.append((out.detach(), x.grad, [p.grad for p in module.parameters()]))
    (out_a, gx_a, gp_a), (out_b, gx_b, gp_b) = results
    assert torch.equal(out_a, out_b) and torch.equal(gx_a, gx_b)
    assert all(torch.equal(a, b) for a, b in zip(gp_a, gp_b) if a is not None)
