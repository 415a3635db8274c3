"""DDP on 2 CPU processes (gloo): ranks stay identical and match a single-process run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel

from tests.conftest import tiny_config_dict
from training.checkpoint import load_checkpoint
from training.config import config_from_dict
from training.loop import _LossModule, set_trainable, train_step
from training.models import LatentActionModel
from training.optim import build_optimizers

STEPS, GLOBAL_BATCH = 3, 4


def fixed_batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    return [torch.randint(0, 256, (GLOBAL_BATCH, 8, 3, 32, 32), dtype=torch.uint8, generator=g) for _ in range(STEPS)]


def train(stage: str, kind: str, rank: int = 0, world: int = 1) -> tuple[dict[str, torch.Tensor], list[float]]:
    cfg = config_from_dict(tiny_config_dict("unused", ["unused"], **{"model.regularizer.kind": kind}))
    torch.manual_seed(0)
    model = LatentActionModel(cfg.model)
    modules = set_trainable(model, stage)
    optimizers = build_optimizers(cfg.train.lam.optim, modules)
    wrapped: torch.nn.Module = _LossModule(model, stage)
    if world > 1:
        wrapped = DistributedDataParallel(wrapped)
    share = GLOBAL_BATCH // world
    losses = []
    for batch in fixed_batches():
        result = train_step(wrapped, optimizers, batch[rank * share : (rank + 1) * share], grad_clip=1.0)
        loss = torch.tensor(result.loss)
        if world > 1:
            dist.all_reduce(loss)
            loss /= world
        losses.append(loss.item())
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return weights, losses


def _worker(rank: int, world: int, init_file: str, out: str, stage: str, kind: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    weights, losses = train(stage, kind, rank, world)
    save_file({**weights, "losses": torch.tensor(losses)}, f"{out}/rank{rank}.safetensors")
    dist.destroy_process_group()


@pytest.mark.parametrize(("stage", "kind"), [("encoder", "sparse"), ("lam", "noisy")])
def test_two_ranks_hold_identical_weights_matching_one_process(tmp_path: Path, stage: str, kind: str) -> None:
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path), stage, kind), nprocs=2, join=True)
    r0, r1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    for key in r0:
        if key != "losses":
            assert torch.equal(r0[key], r1[key]), key  # DDP keeps replicas bit-identical
    if kind == "noisy":
        return  # sampled noise differs between layouts; identical replicas is the property here
    single, losses = train(stage, kind)
    assert torch.allclose(r0["losses"], torch.tensor(losses), rtol=1e-4, atol=1e-5)
    for key, value in single.items():
        assert torch.allclose(r0[key], value, rtol=1e-3, atol=1e-5), key


def test_torchrun_cli_two_ranks(tmp_path: Path, tiny_corpus: Path) -> None:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config_dict(str(tmp_path / "runs"), [str(tiny_corpus)], **{"train.encoder.steps": 2})))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "training.cli", "train", "encoder", "--config", str(cfg)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = load_checkpoint(tmp_path / "runs" / "tiny" / "encoder" / "checkpoint")
    assert ckpt.step == 2
