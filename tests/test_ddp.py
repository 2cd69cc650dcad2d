"""SPEC §6: a 2-process DDP (gloo, CPU) training step of a tiny Swin gives single-process gradients."""
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.helpers import tiny_swin


def swin_9x9():
    torch.manual_seed(0)
    # 36 px -> 9x9 map: padded windows and shifted blocks in stage 1; stage 2 (5x5) shrinks.
    return tiny_swin(36, depths=(2, 2), num_heads=(1, 2))


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, 36, 36, generator=g), torch.randint(0, 5, (4,), generator=g)


def _worker(rank, world, store, path):
    # A file store: no TCP port to race for (a port picked free can be taken before rank 0 binds it).
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        model = torch.nn.parallel.DistributedDataParallel(swin_9x9())
        x, y = batch()
        shard = slice(rank * 2, rank * 2 + 2)
        loss = torch.nn.functional.cross_entropy(model(x[shard]), y[shard])
        loss.backward()  # DDP all-reduces and averages the gradients over the 2 ranks
        if rank == 0:
            torch.save({n: p.grad for n, p in model.module.named_parameters()}, path)
        # Neither rank tears gloo down while the other may still use the pair (a rank that finishes
        # first and destroys the group can abort the other's pending receive: SIGABRT).
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
def test_ddp_two_processes_match_single_process(tmp_path):
    path = str(tmp_path / "grads.pt")
    ctx = mp.spawn(_worker, args=(2, str(tmp_path / "store"), path), nprocs=2, join=False)
    deadline = time.monotonic() + 300
    while not ctx.join(timeout=5):  # raises if a rank failed
        if time.monotonic() > deadline:  # a hang is a failure, not a stuck CI job
            for proc in ctx.processes:
                proc.kill()
            pytest.fail("the DDP ranks did not finish within 300 s")
    ddp_grads = torch.load(path)

    model = swin_9x9()
    x, y = batch()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    assert set(ddp_grads) == {n for n, _ in model.named_parameters()}
    for name, p in model.named_parameters():
        torch.testing.assert_close(ddp_grads[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)
