"""Data-parallel stage 2 equals the single-process run on the same global batch.

Two real processes with a gloo process group (forked, no Ray) against one process: the loss,
every gradient after the reduction, and the weights after a few optimiser steps must match,
for SOTAlign and for every trained baseline that reads unpaired data.
"""

import io
import multiprocessing as mp
import os

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from sotalign.config import AlignConfig
from sotalign.data.synthetic import make_synthetic
from sotalign.distributed import DistributedContext
from sotalign.heads import LinearHead
from sotalign.losses import SigLIPLoss
from sotalign.objectives import BatchRows, Stage2Inputs, Step, build_objective
from sotalign.stage2 import train_heads
from sotalign.teachers import fit_teacher

os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # the ranks talk over loopback

CONFIG = AlignConfig(head_dim=16, steps=3, optimizer="adamw", lr=1e-2, batch_unpaired=33, log_every=1, nnclr_k=3)
METHODS = ("sotalign", "semi_sail", "semi_structure", "nnclr", "sclip")  # trained, with unpaired data
ROWS = BatchRows(torch.arange(15), torch.arange(5, 38), torch.arange(40, 73))  # odd sizes: uneven shards


def build():
    data = make_synthetic(n_pairs=15, n_unpaired=120, n_val=10, n_test=10, image_dim=12, text_dim=10, seed=1)
    teacher = fit_teacher("cca", data.paired_images, data.paired_texts, dim=6)
    inputs = Stage2Inputs(
        teacher.image_prep(data.paired_images),
        teacher.text_prep(data.paired_texts),
        teacher.image_prep(data.unpaired_images),
        teacher.text_prep(data.unpaired_texts),
        F.normalize(teacher.project_images(data.unpaired_images), dim=1),
        F.normalize(teacher.project_texts(data.unpaired_texts), dim=1),
    )
    torch.manual_seed(0)
    modules = [LinearHead(12, 16), LinearHead(10, 16), SigLIPLoss()]
    return inputs, modules


def one_step(distributed=None, scope="global", method="sotalign"):
    """Loss, its method-specific term and the reduced gradients of one step on ROWS."""
    inputs, modules = build()
    config = CONFIG.replace(ot_scope=scope, method=method)
    batch = Step(*modules, inputs, ROWS, 1, torch.Generator().manual_seed(0), distributed)
    total, terms = build_objective(config, inputs)(batch)
    total.backward()
    if distributed is not None:
        distributed.reduce_gradients(summed=modules[:2], averaged=modules[2:])
    term = terms.get("klot", terms["siglip"])
    return total.item(), term.item(), [p.grad.clone() for m in modules for p in m.parameters()]


def three_steps(distributed=None, method="sotalign"):
    inputs, modules = build()
    train_heads(*modules, inputs, CONFIG.replace(method=method), distributed=distributed)
    return [p.detach().clone() for m in modules for p in m.parameters()]


def worker(rank, world, init_file, scope, queue):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    ctx = DistributedContext.from_process_group()
    methods = METHODS if scope == "global" else ("sotalign",)
    result = {m: (one_step(ctx, scope, m), three_steps(ctx, m) if scope == "global" else None) for m in methods}
    if rank == 0:  # as bytes: shared-memory tensors would need this process alive until they are read
        buffer = io.BytesIO()
        torch.save(result, buffer)
        queue.put(buffer.getvalue())
    dist.barrier()
    dist.destroy_process_group()


def run_ranks(tmp_path, scope, world=2):
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, world, str(tmp_path / "pg"), scope, queue)) for r in range(world)]
    for p in procs:
        p.start()
    result = torch.load(io.BytesIO(queue.get(timeout=120)))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return result


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_two_workers_equal_one_process_on_the_global_batch(tmp_path):
    torch.set_num_threads(1)
    results = run_ranks(tmp_path, "global")
    for method in METHODS:
        (loss, term, grads), weights = results[method]
        ref_loss, ref_term, ref_grads = one_step(method=method)
        assert loss == pytest.approx(ref_loss, rel=1e-6) and term == pytest.approx(ref_term, rel=1e-6), method
        for g, r in zip(grads, ref_grads):
            assert torch.allclose(g, r, rtol=1e-5, atol=1e-7), method
        for w, r in zip(weights, three_steps(method=method)):
            assert torch.allclose(w, r, rtol=1e-5, atol=1e-6), method


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")
def test_local_ot_scope_solves_per_worker_plans(tmp_path):
    (loss, klot, grads), _ = run_ranks(tmp_path, "local")["sotalign"]
    _, global_klot, _ = one_step()
    assert klot != pytest.approx(global_klot, rel=1e-3)  # a plan over 16-17 rows is not the 33-row one
    assert all(torch.isfinite(g).all() for g in grads)


def test_shard_splits_global_rows_in_rank_order():
    rows = torch.arange(7)
    parts = [DistributedContext(r, 3).shard(rows).tolist() for r in range(3)]
    assert parts == [[0, 1, 2], [3, 4], [5, 6]]
    for world in (1, 2, 3, 4, 7):  # gather's sizes, known without an exchange, are shard's
        for total in (world, 10, 11, 1023):
            sizes = DistributedContext(0, world).sizes(total)
            assert sizes == [len(DistributedContext(r, world).shard(torch.arange(total))) for r in range(world)]
    with pytest.raises(ValueError, match="process group"):
        DistributedContext.from_process_group()
