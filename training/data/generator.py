"""Procedural "in-the-wild" video generator with ground-truth motion.

A virtual camera pans and zooms over real photographs shipped with scikit-image. Objects and
figures (soft-masked cut-outs of other photos, textured shapes, a horse silhouette) enter and
cross the frame with their own velocity; a global gain flickers; Gaussian sensor noise is added
per frame; and scene cuts switch to another photograph and camera state. Everything that moved is
recorded in a :class:`ClipMotion`, which serialises to JSON.

Coordinates. Each scene renders from a *canvas*: the photograph upscaled by ``SceneInfo.scale``
(at least 1) so that a crop window has room to move. Positions are in canvas pixels with pixel
centres at integer coordinates. A camera at centre ``(cam_x, cam_y)`` with ``zoom`` z shows canvas
point ``p`` at output pixel ``u = (p - cam_x) * z + (width - 1) / 2`` (same for y), so a window
``width / z`` canvas pixels wide. Per-frame displacements are differences to the previous frame
and are 0 at frame 0 and at scene cuts (a cut is not a motion).

The three sources of randomness (scenes and camera, objects, photometric effects) draw from
separate streams, so turning objects, flicker or noise off leaves the camera path unchanged.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from skimage.filters import gaussian
from skimage.transform import resize

from training.data.photos import available_photos, horse, photo, texture
from training.data.video import write_mp4

__all__ = [
    "MANIFEST_NAME",
    "ClipMotion",
    "GeneratorConfig",
    "ObjectTrack",
    "SceneInfo",
    "clip_seed",
    "generate_clip",
    "generate_corpus",
    "load_manifest",
]

MANIFEST_NAME = "motion.jsonl"
_TEXTURES = ("brick", "grass", "gravel")
_SPRITE_RES = 64  # sprites are built at this resolution and resampled to their on-screen size
_OBJECT_KINDS = ("patch", "shape", "figure")
_DIGITS = 4  # recorded floats are rounded, and frames are rendered from the rounded values


@dataclass(frozen=True)
class GeneratorConfig:
    """What a generated clip looks like; every range is (low, high), inclusive."""

    width: int = 160  # output frame width in pixels (160 leaves room for a 128 crop)
    height: int = 160  # output frame height in pixels
    fps: float = 8.0  # frames per second of the clip (and of the written video)
    seconds: float = 6.0  # clip length; frames = round(fps * seconds)
    pan_speed_range: tuple[float, float] = (5.0, 40.0)  # camera pan speed, output pixels per second
    turn_probability: float = 0.04  # per-frame chance of a sharp turn (new heading and speed)
    zoom_range: tuple[float, float] = (0.8, 1.6)  # zoom: output pixels per canvas pixel
    zoom_speed: float = 0.2  # largest rate of change of log-zoom, per second
    object_count_range: tuple[int, int] = (0, 3)  # objects per scene
    object_size_range: tuple[float, float] = (20.0, 64.0)  # object side at spawn, output pixels
    object_speed_range: tuple[float, float] = (15.0, 60.0)  # object speed across the frame, px/s
    flicker_amplitude: float = 0.08  # global gain stays within 1 ± this
    noise_sigma: float = 2.0  # std of per-frame Gaussian sensor noise, in 0-255 intensity units
    cut_probability: float = 0.3  # chance of a scene cut per clip (and of each further cut)
    max_cuts: int = 2  # most scene cuts in one clip
    photos: tuple[str, ...] = ()  # background photo names; empty means all available
    seed: int = 0  # default seed when generate_clip is called without one

    def __post_init__(self) -> None:
        if self.width < 8 or self.height < 8:
            raise ValueError("width and height must be at least 8")
        if self.fps <= 0 or self.seconds <= 0 or self.num_frames < 2:
            raise ValueError("fps and seconds must give at least 2 frames")
        for name in (
            "pan_speed_range",
            "zoom_range",
            "object_count_range",
            "object_size_range",
            "object_speed_range",
        ):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must satisfy 0 <= low <= high, got {(lo, hi)}")
        if self.zoom_range[0] <= 0:
            raise ValueError("zoom_range must be positive")
        if not 0 <= self.flicker_amplitude < 1:
            raise ValueError("flicker_amplitude must be in [0, 1)")
        if self.noise_sigma < 0 or self.zoom_speed < 0 or self.max_cuts < 0:
            raise ValueError("noise_sigma, zoom_speed and max_cuts must be non-negative")
        if not 0 <= self.cut_probability <= 1 or not 0 <= self.turn_probability <= 1:
            raise ValueError("probabilities must be in [0, 1]")
        unknown = set(self.photos) - set(available_photos())
        if unknown:
            raise ValueError(f"unknown or unavailable photos: {sorted(unknown)}")

    @property
    def num_frames(self) -> int:
        return round(self.fps * self.seconds)

    def photo_names(self) -> tuple[str, ...]:
        return self.photos or available_photos()


@dataclass
class SceneInfo:
    """One shot between cuts: which photo, from which frame, and how its canvas was scaled."""

    photo: str
    start: int  # first frame of the scene
    scale: float  # canvas pixels per original photo pixel
    canvas_width: int
    canvas_height: int


@dataclass
class ObjectTrack:
    """An object in canvas coordinates; lists cover frames start .. start + len(x) - 1."""

    id: int
    kind: str  # "patch" (photo cut-out), "shape" (textured blob) or "figure" (silhouette)
    source: str  # the photo or texture it is made of
    size: float  # side of its square sprite, canvas pixels
    start: int  # frame it appears (in the world, not necessarily on screen)
    x: list[float]
    y: list[float]
    vx: list[float]  # canvas pixels per frame: x[i] - x[i-1] (constant own velocity, rounded)
    vy: list[float]

    @property
    def end(self) -> int:
        return self.start + len(self.x) - 1


@dataclass
class ClipMotion:
    """The true motion and events of one generated clip (see the module docstring)."""

    seed: int
    width: int
    height: int
    fps: float
    num_frames: int
    scenes: list[SceneInfo]
    scene: list[int]  # scene index of each frame
    cam_x: list[float]  # camera centre, canvas pixels
    cam_y: list[float]
    zoom: list[float]  # output pixels per canvas pixel
    dx: list[float]  # cam_x[t] - cam_x[t-1]; 0 at frame 0 and at cuts
    dy: list[float]
    dzoom: list[float]  # zoom[t] - zoom[t-1]; 0 at frame 0 and at cuts
    gain: list[float]  # global flicker gain of each frame
    cuts: list[int]  # frames that start a new scene
    noise_sigma: float
    objects: list[ObjectTrack] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipMotion:
        data = dict(data)
        data["scenes"] = [SceneInfo(**s) for s in data["scenes"]]
        data["objects"] = [ObjectTrack(**o) for o in data["objects"]]
        return cls(**data)

    def to_screen(self, x: float, y: float, t: int) -> tuple[float, float]:
        """Output-pixel position of canvas point (x, y) in frame t."""
        z = self.zoom[t]
        return (
            (x - self.cam_x[t]) * z + (self.width - 1) / 2,
            (y - self.cam_y[t]) * z + (self.height - 1) / 2,
        )

    def image_shift(self) -> np.ndarray:
        """[T, 2] motion (output pixels, t-1 → t) of the content now at the frame centre.

        Content moves against the camera: it is ``-d * zoom[t-1]``; 0 at frame 0 and at cuts.
        """
        d = np.stack([self.dx, self.dy], axis=1)
        prev_zoom = np.concatenate([[self.zoom[0]], self.zoom[:-1]])
        return -d * prev_zoom[:, None]


# --------------------------------------------------------------------------- photo sources


@cache
def _canvas(name: str, min_side: int) -> tuple[np.ndarray, float]:
    """The photo upscaled (never downscaled) so its shorter side is at least min_side."""
    img = photo(name)
    scale = max(1.0, min_side / min(img.shape[:2]))
    if scale > 1.0:
        shape = (math.ceil(img.shape[0] * scale), math.ceil(img.shape[1] * scale))
        img = resize(img, shape, order=1, preserve_range=True, anti_aliasing=False)
        img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        img.setflags(write=False)
    return img, scale


@cache
def _texture(name: str) -> np.ndarray:
    img = texture(name).astype(np.float32)
    return (img - img.min()) / max(float(np.ptp(img)), 1.0)


@cache
def _horse_mask() -> np.ndarray:
    """A soft-edged horse silhouette at sprite resolution (True in skimage is the background)."""
    figure = (~horse()).astype(np.float32)
    mask = resize(figure, (_SPRITE_RES, _SPRITE_RES), order=1, anti_aliasing=True)
    return np.clip(gaussian(mask, sigma=0.8) * 1.2, 0, 1).astype(np.float32)


def _canvas_min_side(cfg: GeneratorConfig) -> int:
    # Two widest windows side by side: the camera can always move by at least one window.
    return math.ceil(2 * max(cfg.width, cfg.height) / cfg.zoom_range[0]) + 4


# --------------------------------------------------------------------------- camera


def _log_zoom_bounds(cfg: GeneratorConfig) -> tuple[float, float]:
    return math.log(cfg.zoom_range[0]), math.log(cfg.zoom_range[1])


def _centre_bounds(cfg: GeneratorConfig, canvas_shape: tuple[int, ...], z: float) -> np.ndarray:
    """[[x_lo, x_hi], [y_lo, y_hi]] keeping the bilinear window inside the canvas."""
    half = np.array([(cfg.width - 1) / (2 * z), (cfg.height - 1) / (2 * z)]) + 1.0
    size = np.array([canvas_shape[1], canvas_shape[0]], dtype=np.float64)
    return np.stack([half, size - 2.0 - half], axis=1)


def _camera_path(
    cfg: GeneratorConfig, rng: np.random.Generator, canvas_shape: tuple[int, ...], n: int
) -> np.ndarray:
    """[n, 3] (cam_x, cam_y, zoom): a wandering heading with occasional sharp turns and a
    smoothly drifting log-zoom, reflected at the canvas and zoom limits."""
    lz_lo, lz_hi = _log_zoom_bounds(cfg)
    s_lo, s_hi = cfg.pan_speed_range
    lz = rng.uniform(lz_lo, lz_hi)
    bounds = _centre_bounds(cfg, canvas_shape, math.exp(lz))
    pos = rng.uniform(bounds[:, 0], bounds[:, 1])
    heading = rng.uniform(0, 2 * math.pi)
    speed = rng.uniform(s_lo, s_hi)
    lz_step = cfg.zoom_speed / cfg.fps
    lz_vel = lz_target = rng.uniform(-1.0, 1.0) * lz_step
    out = np.empty((n, 3))
    out[0] = (*pos, math.exp(lz))
    for t in range(1, n):
        heading += rng.normal(0.0, 0.15)
        turn, turn_angle, new_speed = rng.random(), rng.uniform(0.5, 1.0) * math.pi, rng.uniform(s_lo, s_hi)
        if turn < cfg.turn_probability:
            heading += turn_angle * (1 if rng.random() < 0.5 else -1)
            speed = new_speed
        else:
            speed = float(np.clip(speed + rng.normal(0.0, 0.05 * (s_hi - s_lo)), s_lo, s_hi))
        retarget, new_target = rng.random(), rng.uniform(-1.0, 1.0) * lz_step
        if retarget < 0.1:
            lz_target = new_target
        lz_vel = 0.85 * lz_vel + 0.15 * lz_target
        lz += lz_vel
        if not lz_lo <= lz <= lz_hi:
            lz, lz_vel, lz_target = min(max(lz, lz_lo), lz_hi), -lz_vel, -lz_target
        z = math.exp(lz)
        pos = pos + speed / cfg.fps / z * np.array([math.cos(heading), math.sin(heading)])
        bounds = _centre_bounds(cfg, canvas_shape, z)
        # Bounce off the canvas edge: the recorded path stays the one actually rendered.
        if not bounds[0, 0] <= pos[0] <= bounds[0, 1]:
            heading = math.pi - heading
        if not bounds[1, 0] <= pos[1] <= bounds[1, 1]:
            heading = -heading
        pos = np.clip(pos, bounds[:, 0], bounds[:, 1])
        out[t] = (*pos, z)
    return out


def _cut_frames(cfg: GeneratorConfig, rng: np.random.Generator) -> list[int]:
    n_frames, min_len = cfg.num_frames, 2
    n_cuts = 0
    while n_cuts < cfg.max_cuts and rng.random() < cfg.cut_probability:
        n_cuts += 1
    candidates = np.arange(min_len, n_frames - min_len + 1)
    if n_cuts == 0 or len(candidates) == 0:
        return []
    picks = sorted(int(c) for c in rng.choice(candidates, min(n_cuts, len(candidates)), replace=False))
    cuts: list[int] = []
    for c in picks:  # keep every scene at least min_len frames long
        if not cuts or c - cuts[-1] >= min_len:
            cuts.append(c)
    return cuts


# --------------------------------------------------------------------------- objects


def _soft_blob(rng: np.random.Generator, box: bool) -> np.ndarray:
    r = (np.arange(_SPRITE_RES) + 0.5) / _SPRITE_RES * 2 - 1
    yy, xx = np.meshgrid(r, r, indexing="ij")
    ax, ay = rng.uniform(0.6, 0.95, size=2)
    box_dist = np.maximum(np.abs(xx) / ax, np.abs(yy) / ay)
    dist = box_dist if box else np.hypot(xx / ax, yy / ay)
    return np.clip((1.0 - dist) / 0.12, 0.0, 1.0).astype(np.float32)


def _photo_patch(rng: np.random.Generator, name: str) -> np.ndarray:
    img = photo(name)
    side = int(rng.integers(32, min(img.shape[:2]) // 2 + 1))
    y0 = int(rng.integers(0, img.shape[0] - side + 1))
    x0 = int(rng.integers(0, img.shape[1] - side + 1))
    idx = np.arange(_SPRITE_RES) * side // _SPRITE_RES
    return img[y0 + idx[:, None], x0 + idx[None, :]].astype(np.float32)


def _textured_fill(rng: np.random.Generator, name: str) -> np.ndarray:
    tex = _texture(name)
    y0 = int(rng.integers(0, tex.shape[0] - _SPRITE_RES + 1))
    x0 = int(rng.integers(0, tex.shape[1] - _SPRITE_RES + 1))
    crop = tex[y0 : y0 + _SPRITE_RES, x0 : x0 + _SPRITE_RES]
    colour = rng.uniform(30.0, 255.0, size=3).astype(np.float32)
    return (0.55 + 0.45 * crop)[..., None] * colour


def _make_sprite(
    rng: np.random.Generator, kind: str, background: str, photos: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, str]:
    """(rgb float32 [R,R,3] in 0-255, alpha float32 [R,R], source name)."""
    others = [p for p in photos if p != background] or list(available_photos())
    if kind == "patch":
        source = str(rng.choice(others))
        return _photo_patch(rng, source), _soft_blob(rng, box=False), source
    if kind == "shape":
        source = str(rng.choice(_TEXTURES))
        return _textured_fill(rng, source), _soft_blob(rng, box=rng.random() < 0.5), source
    source = str(rng.choice(others))
    return _photo_patch(rng, source), _horse_mask(), source


def _spawn(
    cfg: GeneratorConfig,
    rng: np.random.Generator,
    cam: np.ndarray,
    t_local: int,
    size_px: float,
    inside: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """World position and velocity (canvas px, per frame) of an object seen by camera row t."""
    cx, cy, z = cam[t_local]
    half = np.array([(cfg.width - 1) / 2, (cfg.height - 1) / 2])
    speed = rng.uniform(*cfg.object_speed_range) / cfg.fps  # output px per frame
    target = rng.uniform(-0.5, 0.5, size=2) * half * 2 * 0.6
    if inside:
        start = rng.uniform(-0.8, 0.8, size=2) * half
        angle = rng.uniform(0, 2 * math.pi)
        direction = np.array([math.cos(angle), math.sin(angle)])
    else:  # just off one edge, heading through the middle of the frame
        edge = int(rng.integers(4))
        along = rng.uniform(-0.8, 0.8)
        margin = size_px / 2 + 1
        start = {
            0: (-half[0] - margin, along * half[1]),
            1: (half[0] + margin, along * half[1]),
            2: (along * half[0], -half[1] - margin),
            3: (along * half[0], half[1] + margin),
        }[edge]
        start = np.array(start)
        direction = (target - start) / max(float(np.linalg.norm(target - start)), 1e-6)
    # Ride along with the camera at spawn so that the object really does cross the frame.
    cam_vel = cam[t_local, :2] - cam[t_local - 1, :2] if t_local > 0 else np.zeros(2)
    pos = np.array([cx, cy]) + start / z
    return pos, direction * speed / z + cam_vel


def _objects_for_scene(
    cfg: GeneratorConfig,
    rng: np.random.Generator,
    cam: np.ndarray,
    start: int,
    background: str,
    first_id: int,
) -> tuple[list[ObjectTrack], list[tuple]]:
    """Tracks (recorded) and sprites (rgb, alpha) for one scene whose camera rows are cam."""
    lo, hi = cfg.object_count_range
    count = int(rng.integers(lo, hi + 1))
    n = len(cam)
    tracks, sprites = [], []
    for k in range(count):
        kind = _OBJECT_KINDS[int(rng.integers(len(_OBJECT_KINDS)))]
        rgb, alpha, source = _make_sprite(rng, kind, background, cfg.photo_names())
        inside = rng.random() < 0.4 or n < 3
        t0 = 0 if inside else int(rng.integers(0, max(1, n - 2)))
        size_px = rng.uniform(*cfg.object_size_range)
        pos, vel = _spawn(cfg, rng, cam, t0, size_px, inside)
        if vel[0] < 0:  # the horse faces right: mirror sprites that travel left
            rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
        steps = np.arange(n - t0)[:, None]
        xy = np.round(pos + steps * vel, _DIGITS)
        v = np.round(np.diff(xy, axis=0, prepend=xy[:1] - vel), _DIGITS)
        tracks.append(
            ObjectTrack(
                id=first_id + k,
                kind=kind,
                source=source,
                size=round(float(size_px / cam[t0, 2]), _DIGITS),
                start=start + t0,
                x=xy[:, 0].tolist(),
                y=xy[:, 1].tolist(),
                vx=v[:, 0].tolist(),
                vy=v[:, 1].tolist(),
            )
        )
        sprites.append((np.ascontiguousarray(rgb), np.ascontiguousarray(alpha)))
    return tracks, sprites


# --------------------------------------------------------------------------- rendering


def _render_background(
    canvas: np.ndarray, cx: float, cy: float, z: float, width: int, height: int
) -> np.ndarray:
    """Bilinear crop-and-resize of the camera window, float32 [H, W, 3] in 0-255."""
    xs = cx + (np.arange(width) - (width - 1) / 2) / z
    ys = cy + (np.arange(height) - (height - 1) / 2) / z
    x0 = np.clip(np.floor(xs).astype(np.intp), 0, canvas.shape[1] - 2)
    y0 = np.clip(np.floor(ys).astype(np.intp), 0, canvas.shape[0] - 2)
    fx = (xs - x0).astype(np.float32)[None, :, None]
    fy = (ys - y0).astype(np.float32)[:, None, None]
    # Separable: interpolate rows within the band of columns the window touches, then columns.
    left = int(x0[0])
    band = canvas[:, left : int(x0[-1]) + 2]
    top, bottom = band[y0].astype(np.float32), band[y0 + 1].astype(np.float32)
    rows = top + (bottom - top) * fy
    xl = x0 - left
    a, b = rows[:, xl], rows[:, xl + 1]
    return a + (b - a) * fx


def _paste(frame: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, u: float, v: float, side: float) -> None:
    """Alpha-blend a sprite centred at output pixel (u, v), nearest-resampled to side pixels."""
    s = max(2, round(side))
    u0, v0 = round(u - (s - 1) / 2), round(v - (s - 1) / 2)
    h, w = frame.shape[:2]
    a0, a1 = max(0, -v0), min(s, h - v0)
    b0, b1 = max(0, -u0), min(s, w - u0)
    if a0 >= a1 or b0 >= b1:
        return
    idx = np.arange(s) * _SPRITE_RES // s
    iy, ix = idx[a0:a1, None], idx[None, b0:b1]
    a = alpha[iy, ix][..., None]
    region = frame[v0 + a0 : v0 + a1, u0 + b0 : u0 + b1]
    region *= 1 - a
    region += a * rgb[iy, ix]


def _flicker(cfg: GeneratorConfig, rng: np.random.Generator) -> np.ndarray:
    """Per-frame gain: a slow sinusoid plus smoothed jitter, within 1 ± flicker_amplitude."""
    n = cfg.num_frames
    freq, phase = rng.uniform(0.3, 2.5), rng.uniform(0, 2 * math.pi)
    jitter = np.zeros(n)
    noise = rng.uniform(-1.0, 1.0, size=n)
    for t in range(n):
        jitter[t] = 0.5 * (jitter[t - 1] if t else 0.0) + 0.5 * noise[t]
    wave = np.sin(2 * math.pi * freq * np.arange(n) / cfg.fps + phase)
    return np.round(1.0 + cfg.flicker_amplitude * (0.7 * wave + 0.3 * jitter), _DIGITS)


# --------------------------------------------------------------------------- public API


def _rounded(values: np.ndarray) -> list[float]:
    return np.round(values, _DIGITS).tolist()


def generate_clip(cfg: GeneratorConfig, seed: int | None = None) -> tuple[np.ndarray, ClipMotion]:
    """Frames uint8 [T, H, W, 3] and their true motion; a pure function of (cfg, seed)."""
    seed = cfg.seed if seed is None else int(seed)
    scene_rng, object_rng, photo_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    )
    n = cfg.num_frames
    photos = cfg.photo_names()
    cuts = _cut_frames(cfg, scene_rng)
    bounds = [0, *cuts, n]

    scenes: list[SceneInfo] = []
    canvases: list[np.ndarray] = []
    cam = np.empty((n, 3))
    scene_of = np.empty(n, dtype=np.int64)
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        choices = [p for p in photos if not scenes or p != scenes[-1].photo] or list(photos)
        name = str(scene_rng.choice(choices))
        canvas, scale = _canvas(name, _canvas_min_side(cfg))
        cam[a:b] = _camera_path(cfg, scene_rng, canvas.shape, b - a)
        scene_of[a:b] = i
        canvases.append(canvas)
        scenes.append(
            SceneInfo(
                photo=name,
                start=a,
                scale=round(scale, 6),
                canvas_width=canvas.shape[1],
                canvas_height=canvas.shape[0],
            )
        )
    cam = np.round(cam, _DIGITS)
    delta = np.diff(cam, axis=0, prepend=cam[:1])
    delta[cuts] = 0.0

    tracks: list[ObjectTrack] = []
    sprites: list[tuple] = []
    for a, b, scene in zip(bounds[:-1], bounds[1:], scenes, strict=True):
        t, s = _objects_for_scene(cfg, object_rng, cam[a:b], a, scene.photo, len(tracks))
        tracks += t
        sprites += s

    gain = _flicker(cfg, photo_rng) if cfg.flicker_amplitude > 0 else np.ones(n)
    motion = ClipMotion(
        seed=seed,
        width=cfg.width,
        height=cfg.height,
        fps=cfg.fps,
        num_frames=n,
        scenes=scenes,
        scene=scene_of.tolist(),
        cam_x=_rounded(cam[:, 0]),
        cam_y=_rounded(cam[:, 1]),
        zoom=_rounded(cam[:, 2]),
        dx=_rounded(delta[:, 0]),
        dy=_rounded(delta[:, 1]),
        dzoom=_rounded(delta[:, 2]),
        gain=gain.tolist(),
        cuts=cuts,
        noise_sigma=float(cfg.noise_sigma),
        objects=tracks,
    )
    return _render(cfg, motion, canvases, sprites, photo_rng), motion


def _render(
    cfg: GeneratorConfig,
    motion: ClipMotion,
    canvases: list[np.ndarray],
    sprites: list[tuple],
    rng: np.random.Generator,
) -> np.ndarray:
    frames = np.empty((motion.num_frames, cfg.height, cfg.width, 3), dtype=np.uint8)
    for t in range(motion.num_frames):
        frame = _render_background(
            canvases[motion.scene[t]], motion.cam_x[t], motion.cam_y[t], motion.zoom[t], cfg.width, cfg.height
        )
        for track, (rgb, alpha) in zip(motion.objects, sprites, strict=True):
            if track.start <= t <= track.end:
                i = t - track.start
                u, v = motion.to_screen(track.x[i], track.y[i], t)
                _paste(frame, rgb, alpha, u, v, track.size * motion.zoom[t])
        frame *= np.float32(motion.gain[t])
        if cfg.noise_sigma > 0:
            frame += rng.standard_normal(frame.shape, dtype=np.float32) * np.float32(cfg.noise_sigma)
        np.clip(frame, 0, 255, out=frame)
        frames[t] = np.rint(frame)
    return frames


def clip_seed(seed: int, index: int) -> int:
    """The seed of clip `index` in a corpus generated with `seed`."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def generate_corpus(
    out_dir: str | os.PathLike[str], n_clips: int, cfg: GeneratorConfig | None = None, seed: int = 0
) -> list[Path]:
    """Write clip_00000.mp4 ... and a motion.jsonl manifest ({"path", "motion"} per line).

    Paths in the manifest are relative to out_dir. The manifest is written last, atomically,
    so it never lists a clip that is missing.
    """
    cfg = cfg or GeneratorConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths, lines = [], []
    for i in range(n_clips):
        frames, motion = generate_clip(cfg, clip_seed(seed, i))
        name = f"clip_{i:05d}.mp4"
        paths.append(write_mp4(frames, out / name, cfg.fps))
        lines.append(
            json.dumps({"path": name, "motion": motion.to_dict()}, sort_keys=True, separators=(",", ":"))
        )
    tmp = out / (MANIFEST_NAME + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines))
    tmp.replace(out / MANIFEST_NAME)
    return paths


def load_manifest(path: str | os.PathLike[str]) -> list[tuple[Path, ClipMotion]]:
    """(absolute clip path, motion) for each line of a motion.jsonl written by generate_corpus."""
    path = Path(path)
    entries = []
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            entries.append((path.parent / record["path"], ClipMotion.from_dict(record["motion"])))
    return entries
