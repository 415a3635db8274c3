"""`build-demo --reuse-encoder` keeps an encoder checkpoint only when it was trained under the same recipe."""

import json
from pathlib import Path

import pytest

from training.bundle import check_reusable_encoder
from training.checkpoint import FORMAT, MANIFEST_FILE, CheckpointError
from training.config import RunConfig


def saved_under(directory: Path, cfg: RunConfig) -> Path:
    directory.mkdir(parents=True)
    manifest = {"format": FORMAT, "run_config": cfg.model_dump(mode="json")}
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))
    return directory


def test_an_absent_checkpoint_is_trained_afresh(tmp_path: Path) -> None:
    check_reusable_encoder(RunConfig(), tmp_path / "none")  # no error


def test_the_same_recipe_is_reusable_even_when_later_stages_differ(tmp_path: Path) -> None:
    cfg = RunConfig()
    ckpt = saved_under(tmp_path / "ckpt", cfg)
    later = cfg.model_copy(update={"train": cfg.train.model_copy(update={"lam": cfg.train.lam.model_copy(update={"steps": 7})})})
    check_reusable_encoder(later, ckpt)


def changed(cfg: RunConfig, section: str) -> RunConfig:
    """`cfg` with one setting of `section` changed."""
    if section == "train.encoder":
        encoder = cfg.train.encoder.model_copy(update={"change_weight": 1.0})
        return cfg.model_copy(update={"train": cfg.train.model_copy(update={"encoder": encoder})})
    if section == "data":
        return cfg.model_copy(update={"data": cfg.data.model_copy(update={"generated_clips": 3})})
    decoder = cfg.model.decoder.model_copy(update={"head": "conv"})
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"decoder": decoder})})


@pytest.mark.parametrize("section", ["train.encoder", "data", "model"])
def test_another_recipe_is_refused_naming_what_differs(tmp_path: Path, section: str) -> None:
    cfg = RunConfig()
    ckpt = saved_under(tmp_path / "ckpt", cfg)
    with pytest.raises(CheckpointError, match=f"different {section} settings.*drop --reuse-encoder"):
        check_reusable_encoder(changed(cfg, section), ckpt)
