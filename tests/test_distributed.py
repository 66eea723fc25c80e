"""DistributedDataParallel on PyTorch's own engine: 2 CPU processes (gloo, localhost) train a model
with inserted attention and dynamic convs; the replicas stay identical and equal a single-process
run on the same global batch."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from dynattn import AttnSpec
from graph_passes import insert_attention

STEPS, GLOBAL_BATCH = 3, 8


def _model() -> nn.Module:
    torch.manual_seed(0)
    base = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )
    model = insert_attention(base, AttnSpec.dyconv(experts=3, temperature=4.0), where="conv:2")
    # no BatchNorm anywhere: replicas normalising their own shards would differ from one big batch
    return insert_attention(model, [AttnSpec.se(reduction=2), AttnSpec.eca()], where="conv")


def _data():
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(GLOBAL_BATCH, 3, 10, 10, generator=g), torch.randn(GLOBAL_BATCH, 4, generator=g))
            for _ in range(STEPS)]


def _train(model, shards):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in shards:
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = nn.parallel.DistributedDataParallel(_model())
        per = GLOBAL_BATCH // world
        _train(model, [(x[rank * per:(rank + 1) * per], y[rank * per:(rank + 1) * per]) for x, y in _data()])
        torch.save(model.module.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
def test_ddp_replicas_match_single_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    states = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    single = _model()
    _train(single, _data())
    expected = single.state_dict()
    assert set(states[0]) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(states[0][key], states[1][key], atol=0, rtol=0, msg=f"replicas differ: {key}")
        torch.testing.assert_close(states[0][key], value, atol=1e-5, rtol=1e-5, msg=f"differs from single: {key}")
    # training moved the attention and the experts
    assert not torch.equal(states[0]["2.weight"][:8], states[0]["2.weight"][8:16])


FSDP_STEPS = 5


def _fsdp_batch():
    g = torch.Generator().manual_seed(2)
    return torch.randn(GLOBAL_BATCH, 3, 10, 10, generator=g), torch.randn(GLOBAL_BATCH, 4, generator=g)


def _fsdp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from graph_passes import report

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = _model()  # inserted on every rank: the same sites and parameter order everywhere
        names = ([r.module for r in report(model).records], [n for n, _ in model.named_parameters()])
        mesh = init_device_mesh("cpu", (world,))
        for module in model:
            if any(p.requires_grad for p in module.parameters()):
                fully_shard(module, mesh=mesh)  # FSDP2, one unit per block, then the root
        fully_shard(model, mesh=mesh)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        per = GLOBAL_BATCH // world
        losses = []
        x, y = _fsdp_batch()
        for _ in range(FSDP_STEPS):
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x[rank * per:(rank + 1) * per]), y[rank * per:(rank + 1) * per])
            loss.backward()
            opt.step()
            total = loss.detach().clone()
            dist.all_reduce(total)
            losses.append(total.item() / world)
        torch.save({"losses": losses, "names": names}, os.path.join(out_dir, f"fsdp{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
def test_fsdp2_loss_curve_matches_single_process(tmp_path):
    pytest.importorskip("torch.distributed.fsdp", reason="needs FSDP2 (torch.distributed.fsdp.fully_shard)")
    mp.spawn(_fsdp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    runs = [torch.load(tmp_path / f"fsdp{r}.pt") for r in range(2)]
    assert runs[0]["names"] == runs[1]["names"]  # insertion is deterministic across ranks
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _fsdp_batch()
    expected = []
    for _ in range(FSDP_STEPS):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        expected.append(loss.item())
    assert runs[0]["losses"] == runs[1]["losses"]
    torch.testing.assert_close(torch.tensor(runs[0]["losses"]), torch.tensor(expected), atol=1e-5, rtol=1e-5)
    assert expected[-1] < expected[0]  # it trained (the same batch each step)
