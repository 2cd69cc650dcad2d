"""SPEC §6: a 2-process DDP (gloo, CPU) training step of a tiny Swin gives single-process gradients."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fastwin.models.swin import SwinTransformer


def tiny_swin():
    torch.manual_seed(0)
    # 36 px -> 9x9 map: padded windows and shifted blocks in stage 1; stage 2 (5x5) shrinks.
    return SwinTransformer(img_size=36, patch_size=4, embed_dim=16, depths=(2, 2), num_heads=(1, 2),
                           window_size=4, num_classes=5, drop_path_rate=0.0)


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, 36, 36, generator=g), torch.randint(0, 5, (4,), generator=g)


def _worker(rank, world, port, path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        model = torch.nn.parallel.DistributedDataParallel(tiny_swin())
        x, y = batch()
        shard = slice(rank * 2, rank * 2 + 2)
        loss = torch.nn.functional.cross_entropy(model(x[shard]), y[shard])
        loss.backward()  # DDP all-reduces and averages the gradients over the 2 ranks
        if rank == 0:
            torch.save({n: p.grad for n, p in model.module.named_parameters()}, path)
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
def test_ddp_two_processes_match_single_process(tmp_path):
    path = str(tmp_path / "grads.pt")
    mp.spawn(_worker, args=(2, _free_port(), path), nprocs=2, join=True)
    ddp_grads = torch.load(path)

    model = tiny_swin()
    x, y = batch()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    assert set(ddp_grads) == {n for n, _ in model.named_parameters()}
    for name, p in model.named_parameters():
        torch.testing.assert_close(ddp_grads[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)
