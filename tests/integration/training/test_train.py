"""Training stages end to end on a tiny config and a tiny generated corpus; resume; CLI errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import tiny_config_dict
from training.checkpoint import CheckpointError, load_checkpoint
from training.config import RunConfig, config_from_dict
from training.loop import TrainingError, run_stage

LAWM = [sys.executable, "-m", "training.cli"]


def test_encoder_then_lam_then_decoder(tiny_config: RunConfig) -> None:
    enc = run_stage(tiny_config, "encoder")
    lam = run_stage(tiny_config, "lam")
    dec = run_stage(tiny_config, "decoder")
    for path, stage in ((enc, "encoder"), (lam, "lam"), (dec, "decoder")):
        manifest = load_checkpoint(path, expected=tiny_config.model).manifest
        assert manifest["stage"] == stage and manifest["step"] == 3 - (stage == "decoder")
    assert load_checkpoint(lam).manifest["trained"] == ["decoder", "encoder", "idm", "regularizer", "world_model"]
    # the LAM stage froze the encoder: its weights equal the encoder stage's
    a, b = load_checkpoint(enc).tensors, load_checkpoint(lam).tensors
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("encoder."))
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("world_model."))
    run_dir = Path(tiny_config.run_dir) / "tiny" / "lam"
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3]
    assert {"loss", "prediction_l1", "clips_per_s", "data_share"} <= set(logged[-1])
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["name"] == "tiny"  # resolved config recorded


def test_resume_continues_from_the_last_checkpoint(tiny_config: RunConfig) -> None:
    run_stage(tiny_config, "encoder", max_steps=2)  # stops at step 2 (as if killed), checkpoint at 2
    assert load_checkpoint(Path(tiny_config.run_dir) / "tiny" / "encoder" / "checkpoint").step == 2
    path = run_stage(tiny_config, "encoder")
    assert load_checkpoint(path).step == 3
    steps = [json.loads(x)["step"] for x in (path.parent / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]  # step 3 ran once, after resuming; nothing was redone


def test_encoder_stage_with_the_change_term_in_windows(tmp_path: Path, tiny_corpus: Path) -> None:
    raw = tiny_config_dict(str(tmp_path), [str(tiny_corpus)],
                           **{"train.encoder.change_weight": 1.0, "train.encoder.window": 4})
    path = run_stage(config_from_dict(raw), "encoder")
    logged = [json.loads(line) for line in (path.parent / "metrics.jsonl").read_text().splitlines()]
    assert all(r["change_l1"] > 0 and r["loss"] > r["pixel_l1"] for r in logged)


def test_encoder_window_that_does_not_fit_the_clip_is_refused(tmp_path: Path, tiny_corpus: Path) -> None:
    raw = tiny_config_dict(str(tmp_path), [str(tiny_corpus)], **{"train.encoder.window": 6})  # clips of 8 frames
    with pytest.raises(ValueError, match=r"train.encoder.window=6 must be a multiple of the tubelet \(2\) and divide data.frames=8"):
        config_from_dict(raw)  # refused when the config loads, before a run folder exists


def test_lam_stage_with_the_warp_term_logs_it_and_moves_the_warp(tmp_path: Path, tiny_corpus: Path) -> None:
    raw = tiny_config_dict(str(tmp_path), [str(tiny_corpus)], **{
        "model.world_model.warp": True, "model.world_model.warp_init": 0.2, "train.lam.warp_weight": 1.0})
    cfg = config_from_dict(raw)
    run_stage(cfg, "encoder")
    path = run_stage(cfg, "lam")
    logged = [json.loads(line) for line in (path.parent / "metrics.jsonl").read_text().splitlines()]
    assert all(r["warp_l1"] > 0 and r["loss"] > r["prediction_l1"] + r["warp_l1"] * 0.99 for r in logged)
    assert load_checkpoint(path, expected=cfg.model).tensors["world_model.warp_modulation.bias"].abs().sum() > 0


@pytest.mark.parametrize("kind", ["translation", "similarity"])
def test_lam_stage_with_the_motion_prior_logs_it(tmp_path: Path, tiny_corpus: Path, kind: str) -> None:
    raw = tiny_config_dict(str(tmp_path), [str(tiny_corpus)], **{
        "model.world_model.warp": True, "model.world_model.warp_init": 0.2, "train.lam.motion_prior_weight": 2.0,
        "train.lam.context": "pairs", "train.lam.motion_prior": kind})
    cfg = config_from_dict(raw)
    run_stage(cfg, "encoder")
    path = run_stage(cfg, "lam")
    logged = [json.loads(line) for line in (path.parent / "metrics.jsonl").read_text().splitlines()]
    assert logged and all(r["motion_prior_l1"] > 0 and r["loss"] >= r["prediction_l1"] + 2.0 * r["motion_prior_l1"] * 0.99
                          for r in logged)


def test_lam_stage_on_cached_states_trains_on_those_clips_only(tmp_path: Path, tiny_corpus: Path) -> None:
    raw = tiny_config_dict(str(tmp_path), [str(tiny_corpus)], **{
        "model.world_model.warp": True, "model.world_model.warp_init": 0.2, "train.lam.motion_prior_weight": 1.0,
        "train.lam.context": "pairs", "train.lam.cache_clips": 3, "train.lam.steps": 4,
        "data.shuffle_buffer": 0})  # a buffer would read ahead: here the count must be the cache's alone
    cfg = config_from_dict(raw)
    run_stage(cfg, "encoder")
    path = run_stage(cfg, "lam")
    manifest = load_checkpoint(path, expected=cfg.model).manifest
    assert manifest["step"] == 4 and manifest["data"]["cached_clips_rank0"] == 3
    assert manifest["data"]["clips_seen_by_rank0"] == 4  # two loader batches of 2 decoded, none after
    logged = [json.loads(line) for line in (path.parent / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    assert all(r["motion_prior_l1"] > 0 for r in logged)
    before = load_checkpoint(Path(cfg.run_dir) / "tiny" / "encoder" / "checkpoint").tensors
    after = load_checkpoint(path).tensors
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("encoder."))  # still frozen
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("world_model."))


def test_a_short_lam_stage_caches_no_more_clips_than_it_draws(tmp_path: Path, tiny_corpus: Path) -> None:
    raw = tiny_config_dict(str(tmp_path), [str(tiny_corpus)], **{
        "train.lam.context": "pairs", "train.lam.cache_clips": 10, "train.lam.steps": 2, "data.shuffle_buffer": 0})
    cfg = config_from_dict(raw)
    run_stage(cfg, "encoder")
    manifest = load_checkpoint(run_stage(cfg, "lam"), expected=cfg.model).manifest
    assert manifest["data"]["cached_clips_rank0"] == 4  # 2 steps x batch 2, not the 10 asked for
    assert manifest["data"]["clips_seen_by_rank0"] == 4


@pytest.mark.parametrize(("key", "value", "message"), [
    ("train.encoder.cache_clips", 8, "train.encoder.cache_clips: only the LAM stage caches states"),
    ("train.lam.cache_clips", 1, r"train.lam.cache_clips=1 is smaller than one batch \(train.lam.batch=2\)"),
])
def test_a_state_cache_that_cannot_work_is_refused(tmp_path: Path, tiny_corpus: Path, key: str, value: int,
                                                   message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config_from_dict(tiny_config_dict(str(tmp_path), [str(tiny_corpus)], **{key: value}))


def test_a_motion_prior_without_a_warping_world_model_is_refused(tmp_path: Path, tiny_corpus: Path) -> None:
    raw = tiny_config_dict(str(tmp_path), [str(tiny_corpus)], **{"train.lam.motion_prior_weight": 0.5})
    with pytest.raises(ValueError, match=r"train.lam.motion_prior_weight=0.5 needs a warping world model"):
        config_from_dict(raw)


def test_an_unknown_motion_prior_is_refused_with_the_known_ones(tmp_path: Path, tiny_corpus: Path) -> None:
    raw = tiny_config_dict(str(tmp_path), [str(tiny_corpus)], **{"train.lam.motion_prior": "homography"})
    with pytest.raises(ValueError, match=r"motion_prior[\s\S]*'translation' or 'similarity'"):
        config_from_dict(raw)


def test_a_warp_term_without_a_warping_world_model_is_refused(tmp_path: Path, tiny_corpus: Path) -> None:
    raw = tiny_config_dict(str(tmp_path), [str(tiny_corpus)], **{"train.lam.warp_weight": 1.0})
    with pytest.raises(ValueError, match=r"train.lam.warp_weight=1 needs a warping world model: set model.world_model.warp: true"):
        config_from_dict(raw)


def test_lam_without_an_encoder_says_what_to_run(tiny_config: RunConfig) -> None:
    with pytest.raises(TrainingError, match="lawm train encoder --config tiny"):
        run_stage(tiny_config, "lam")


def test_noisy_and_discrete_regularizers_train(tmp_path: Path, tiny_corpus: Path) -> None:
    for kind in ("noisy", "discrete"):
        raw = tiny_config_dict(str(tmp_path / kind), [str(tiny_corpus)], **{"model.regularizer.kind": kind, "model.regularizer.reset_every": 2})
        cfg = config_from_dict(raw)
        run_stage(cfg, "encoder")
        path = run_stage(cfg, "lam")
        metrics = load_checkpoint(path).manifest["metrics"]
        assert ("kl" in metrics) if kind == "noisy" else ("codes_used" in metrics)


# ----------------------------------------------------------------------------- CLI bad input
def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LAWM, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def write_config(tmp_path: Path, sources: list[str], **overrides: object) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(str(tmp_path / "runs"), sources, **overrides)))
    return path


def assert_clean_failure(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_cli_unknown_config_key(tmp_path: Path) -> None:
    result = run_cli("train", "encoder", "--config", "demo", "model.encoder.widht=3")
    assert_clean_failure(result, "unknown key 'model.encoder.widht'")


def test_cli_missing_data_folder(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, [str(tmp_path / "no-such-folder")])
    assert_clean_failure(run_cli("train", "encoder", "--config", str(cfg)), "no-such-folder does not exist")


def test_cli_folder_without_readable_video(tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(b"")
    (folder / "b.mp4").write_bytes(b"\x00garbage" * 100)
    cfg = write_config(tmp_path, [str(folder)])
    assert_clean_failure(run_cli("train", "encoder", "--config", str(cfg)), "no readable video", "2 files skipped")


def test_cli_video_smaller_than_the_crop(tmp_path: Path, tiny_corpus: Path) -> None:
    cfg = write_config(
        tmp_path, [str(tiny_corpus)], **{"model.encoder.image_size": 64, "data.size": 64}
    )  # the corpus is 48 px
    assert_clean_failure(run_cli("train", "encoder", "--config", str(cfg)), "too_small")


def test_cli_truncated_video_is_skipped_not_fatal(tmp_path: Path, tiny_corpus: Path) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    for clip in sorted(tiny_corpus.glob("*.mp4"))[:4]:
        (folder / clip.name).write_bytes(clip.read_bytes())
    whole = (tiny_corpus / "clip_00005.mp4").read_bytes()
    (folder / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    cfg = write_config(tmp_path, [str(folder)], **{"train.encoder.steps": 1})
    result = run_cli("train", "encoder", "--config", str(cfg))
    assert result.returncode == 0, result.stderr
    manifest = load_checkpoint(tmp_path / "runs" / "tiny" / "encoder" / "checkpoint").manifest
    assert "truncated" in json.dumps(manifest["data"]) or "corrupt" in json.dumps(manifest["data"])


def test_cli_checkpoint_from_another_config_and_tampered(tmp_path: Path, tiny_corpus: Path) -> None:
    cfg = write_config(tmp_path, [str(tiny_corpus)], **{"train.encoder.steps": 1})
    assert run_cli("train", "encoder", "--config", str(cfg)).returncode == 0
    ckpt = tmp_path / "runs" / "tiny" / "encoder" / "checkpoint"
    # the LAM stage keeps the encoder frozen, so the encoder's fields must match
    result = run_cli("train", "lam", "--config", str(cfg), "model.encoder.dim=48", "--init", str(ckpt))
    assert_clean_failure(result, "model.encoder.dim: expected 48, checkpoint has 32")
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\x00\x00\x00\x01")
    assert_clean_failure(run_cli("info", str(ckpt)), "sha256 mismatch", "model.safetensors")


def test_lam_may_start_from_an_encoder_trained_under_another_regularizer(tmp_path: Path, tiny_corpus: Path) -> None:
    sparse = config_from_dict(tiny_config_dict(str(tmp_path / "runs"), [str(tiny_corpus)]))
    encoder = run_stage(sparse, "encoder")
    noisy = config_from_dict(
        tiny_config_dict(str(tmp_path / "runs"), [str(tiny_corpus)], **{"name": "noisy", "model.regularizer.kind": "noisy"})
    )
    lam = run_stage(noisy, "lam", init_from=encoder)  # only the frozen encoder's fields must match
    assert load_checkpoint(lam, expected=noisy.model).manifest["model_config"]["regularizer"]["kind"] == "noisy"


def test_cli_train_controller_saves_it_with_the_model(tiny_config: RunConfig, tmp_path: Path) -> None:
    from training.evaluation.common import load_lam, require_controller

    run_stage(tiny_config, "encoder")
    lam = run_stage(tiny_config, "lam")
    with pytest.raises(CheckpointError, match="has no controller: train one"):
        require_controller(load_lam(lam))
    out = tmp_path / "ctrl"
    result = run_cli("train", "controller", "--checkpoint", str(lam), "--env", "manipulation", "--episodes", "2", "--steps", "5", "--out", str(out))
    assert result.returncode == 0, result.stderr
    model = load_lam(out)
    assert require_controller(model).cfg.action_dim == 4
    assert load_checkpoint(out).manifest["controller_env"] == "manipulation"
    bad = run_cli("train", "controller", "--checkpoint", str(lam), "--env", "kitchen")
    assert bad.returncode == 2 and "--env must be manipulation or navigation" in bad.stderr


def test_finetune_starts_every_trained_part_from_the_checkpoint(tiny_config: RunConfig) -> None:
    run_stage(tiny_config, "encoder")
    lam = run_stage(tiny_config, "lam")
    start = load_checkpoint(lam).tensors
    adapted_cfg = tiny_config.model_copy(update={"name": "adapted"})
    with pytest.raises(TrainingError, match="--init"):
        run_stage(adapted_cfg, "lam", finetune=True)
    # another seed, so a restarted IDM cannot coincide with the checkpoint's barely trained one
    fresh_cfg = tiny_config.model_copy(update={"name": "fresh", "train": tiny_config.train.model_copy(update={"seed": 1})})
    adapted = load_checkpoint(run_stage(adapted_cfg, "lam", init_from=lam, finetune=True, max_steps=1)).tensors
    fresh = load_checkpoint(run_stage(fresh_cfg, "lam", init_from=lam, max_steps=1)).tensors
    idm = [k for k in start if k.startswith("idm.")]

    def drift(tensors: dict[str, torch.Tensor]) -> float:
        return max((tensors[k].float() - start[k].float()).abs().max().item() for k in idm)

    # one optimiser step moves a fine-tuned IDM by about the learning rate; a restarted one is elsewhere
    assert drift(adapted) < 0.01 < drift(fresh)
