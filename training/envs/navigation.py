"""A camera moving over a photo-textured ground plane, with camera-relative actions.

The world is an infinite (wrapping) ground plane tiled with real photographs shipped with
scikit-image: ground textures (grass, gravel, brick, tinted) and ordinary photos laid out like
paving. A pinhole camera at ``CAMERA_HEIGHT`` metres, pitched down by ``PITCH``, looks at it;
every output pixel is inverse-mapped to the ground (ray–plane intersection), sampled bilinearly
from a mip level that matches its footprint (so distant ground does not shimmer), and faded into
haze with distance. Above the horizon a cylindrical panorama (sky gradient, clouds, a distant
ridge) is looked up by azimuth, so turning shifts it sideways exactly as a real camera would.

Coordinates. World x east, y north, metres; heading in radians, counter-clockwise from +x,
accumulated (not wrapped). An action ``(forward, lateral, yaw)`` translates the camera by
``forward`` along its heading and ``lateral`` to its left, then turns it by ``yaw`` (left
positive). :func:`training.envs.metrics.poses_from_actions` integrates the same rule.

Everything is NumPy; a 128 px frame takes about 2 ms on one CPU core. Given the seed, the world,
the start pose and every frame are deterministic.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage.transform import resize

from training.data.photos import available_photos, square_photo, texture
from training.envs.bounds import clip_to_bounds

__all__ = ["NavigationEnv"]

TEXEL = 0.015  # metres per ground texel at mip level 0
TILE = 512  # texels per tile side (7.68 m)
GRID = 5  # tiles per world side: the world repeats every GRID * TILE * TEXEL = 38.4 m
LEVELS = 6  # mip levels; the coarsest has 64 texels per side
_GROUND_TEXTURES = {  # grayscale skimage textures and the colour they are tinted with
    "grass": (0.55, 0.70, 0.35),
    "gravel": (0.72, 0.68, 0.60),
    "brick": (0.80, 0.50, 0.40),
}
_PANO_WIDTH = 720  # panorama columns for 360 degrees
_PANO_ROWS_PER_RAD = 120.0
_PANO_TOP = math.radians(60.0)  # highest elevation the panorama covers
_PANO_BOTTOM = math.radians(-5.0)
_HAZE = np.array([196.0, 204.0, 212.0], dtype=np.float32)


# --------------------------------------------------------------------------- world textures


@cache
def _tile(name: str) -> np.ndarray:
    """A TILE x TILE RGB uint8 tile: a tinted ground texture or a centre-cropped photo."""
    if name in _GROUND_TEXTURES:
        gray = texture(name).astype(np.float32) / 255.0
        gray = resize(gray, (TILE, TILE), order=1, anti_aliasing=True)
        gray = 0.35 + 0.65 * (gray - gray.min()) / max(float(np.ptp(gray)), 1e-6)
        img = gray[..., None] * np.array(_GROUND_TEXTURES[name], dtype=np.float32) * 255.0
    else:
        crop = square_photo(name).astype(np.float32)
        side = crop.shape[0]
        img = resize(crop, (TILE, TILE), order=1, anti_aliasing=side > TILE, preserve_range=True)
    out = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    out.setflags(write=False)
    return out


def _world_pyramid(rng: np.random.Generator) -> list[np.ndarray]:
    """Mip pyramid of the world texture: level l is uint8 [S/2^l, S/2^l, 3], S = GRID * TILE.

    Row index grows southwards (-y) so that the texture reads as a map seen from above.
    """
    pool = list(_GROUND_TEXTURES) + list(available_photos())
    n_ground = len(_GROUND_TEXTURES)
    # Half of the cells are ground textures, the rest photos "painted" on the ground as landmarks.
    weights = np.array([0.5 / n_ground] * n_ground + [0.5 / (len(pool) - n_ground)] * (len(pool) - n_ground))
    world = np.empty((GRID * TILE, GRID * TILE, 3), dtype=np.uint8)
    for i in range(GRID):
        for j in range(GRID):
            name = str(pool[int(rng.choice(len(pool), p=weights))])
            tile = np.rot90(_tile(name), k=int(rng.integers(4)))
            if rng.random() < 0.5:
                tile = tile[:, ::-1]
            world[i * TILE : (i + 1) * TILE, j * TILE : (j + 1) * TILE] = tile
    levels = [world]
    for _ in range(LEVELS - 1):
        prev = levels[-1].astype(np.float32)
        half = 0.25 * (prev[0::2, 0::2] + prev[1::2, 0::2] + prev[0::2, 1::2] + prev[1::2, 1::2])
        levels.append(np.rint(half).astype(np.uint8))
    return levels


def _panorama(rng: np.random.Generator) -> np.ndarray:
    """float32 [rows, _PANO_WIDTH, 3] backdrop indexed by (elevation, azimuth), azimuth wrapping.

    Column c is world azimuth 2*pi*c/_PANO_WIDTH (counter-clockwise from +x); row 0 is _PANO_TOP.
    """
    rows = math.ceil((_PANO_TOP - _PANO_BOTTOM) * _PANO_ROWS_PER_RAD) + 1
    el = _PANO_TOP - np.arange(rows, dtype=np.float32) / _PANO_ROWS_PER_RAD  # [rows]
    az = np.arange(_PANO_WIDTH, dtype=np.float32) * (2 * math.pi / _PANO_WIDTH)  # [W]
    # Sky: pale at the horizon, deeper blue overhead.
    k = np.clip(el / math.radians(50.0), 0, 1)[:, None, None] ** 0.6
    zenith = np.array([70.0, 120.0, 205.0], dtype=np.float32) * rng.uniform(0.9, 1.1)
    sky = (1 - k) * _HAZE + k * zenith
    # Clouds: smooth noise, wrapped in azimuth, thinning towards the horizon.
    noise = gaussian_filter(
        rng.standard_normal((rows, _PANO_WIDTH)), sigma=(3.0, 9.0), mode=("nearest", "wrap")
    )
    noise /= noise.std() + 1e-6
    cover = (
        np.clip((noise - rng.uniform(0.0, 0.8)) * 0.6, 0, 1) * np.clip(el / math.radians(8), 0, 1)[:, None]
    )
    sky = sky + cover[..., None] * (np.float32(245.0) - sky)
    # A distant ridge: a periodic random profile filled with hazy, textured green.
    harmonics = np.arange(1, 16)
    amp = rng.uniform(0.3, 1.0, size=harmonics.size) / harmonics
    phase = rng.uniform(0, 2 * math.pi, size=harmonics.size)
    profile = (amp[:, None] * np.sin(harmonics[:, None] * az[None, :] + phase[:, None])).sum(0)
    profile = (profile - profile.min()) / max(float(np.ptp(profile)), 1e-6)
    ridge = math.radians(1.5) + profile * math.radians(rng.uniform(5.0, 11.0))  # [W] elevation
    grass = _tile("grass").astype(np.float32)
    tex = grass[(np.arange(rows) * 3) % TILE][:, (np.arange(_PANO_WIDTH) * 3) % TILE]
    hill = 0.7 * tex * np.array([0.75, 0.9, 1.0], dtype=np.float32) + 0.3 * _HAZE
    below = np.clip((ridge[None, :] - el[:, None]) * _PANO_ROWS_PER_RAD, 0, 1)[..., None]  # soft edge
    return (1 - below) * sky + below * hill


# --------------------------------------------------------------------------- camera geometry


class _Camera:
    """Per-pixel rays of the pitched pinhole camera, precomputed in the body frame."""

    def __init__(self, size: int, height: float, pitch: float, hfov: float) -> None:
        f = (size / 2) / math.tan(hfov / 2)
        c = (size - 1) / 2
        yc, xc = np.meshgrid((np.arange(size) - c) / f, (np.arange(size) - c) / f, indexing="ij")
        # Body frame (forward, left, up); camera axes: optical = (cos p, 0, -sin p),
        # image-down = (-sin p, 0, -cos p), image-right = (0, -1, 0).
        r_fwd = math.cos(pitch) - yc * math.sin(pitch)
        r_left = -xc
        r_up = -math.sin(pitch) - yc * math.cos(pitch)
        horiz = np.hypot(r_fwd, r_left)
        ground = r_up < -1e-6
        t = np.where(ground, height / np.where(ground, -r_up, 1.0), np.inf)
        fwd, left = t * r_fwd, t * r_left  # [S, S] metres ahead / to the left; inf above the horizon
        dist = t * horiz
        near = ground & (dist < 400.0)  # beyond this the ground is pure haze
        fog = np.where(near, 1.0 - np.exp(-np.where(near, dist, 0.0) / 18.0), 1.0).astype(np.float32)
        # Mip level: texels spanned by one pixel step (largest of the two image directions).
        fwd_n, left_n = np.where(near, fwd, 0.0), np.where(near, left, 0.0)
        du = np.hypot(np.gradient(fwd_n, axis=1), np.gradient(left_n, axis=1))
        dv = np.hypot(np.gradient(fwd_n, axis=0), np.gradient(left_n, axis=0))
        footprint = np.maximum(du, dv) / TEXEL
        level = np.clip(np.rint(np.log2(np.maximum(footprint, 1.0))), 0, LEVELS - 1).astype(np.intp)
        flat_near = near.ravel()
        self.ground_idx: list[np.ndarray] = []  # flat pixel indices per mip level
        self.ground_pts: list[np.ndarray] = []  # [n_l, 2] body-frame (forward, left), metres
        self.ground_fog: list[np.ndarray] = []  # [n_l, 1] haze weight
        for lv in range(LEVELS):
            idx = np.flatnonzero(flat_near & (level.ravel() == lv))
            self.ground_idx.append(idx)
            self.ground_pts.append(np.stack([fwd.ravel()[idx], left.ravel()[idx]], axis=1))
            self.ground_fog.append(fog.ravel()[idx][:, None])
        self.haze_idx = np.flatnonzero((ground & ~near).ravel())  # ground too far to texture
        sky = ~ground
        self.sky_idx = np.flatnonzero(sky.ravel())
        self.sky_az = np.arctan2(r_left, r_fwd).ravel()[self.sky_idx]  # left of the heading > 0
        el = np.arctan2(r_up, horiz).ravel()[self.sky_idx]
        self.sky_row = np.clip((_PANO_TOP - el) * _PANO_ROWS_PER_RAD, 0, None)
        # A mild lens vignette, like a real camera's.
        r2 = xc**2 + yc**2
        self.vignette = (1.0 - 0.18 * r2 / r2.max()).astype(np.float32).ravel()[:, None]


def _sample_wrap(tex: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear lookup with wrap-around; tex [R, C, 3], rows/cols float [n] → float32 [n, 3]."""
    n_rows, n_cols = tex.shape[:2]
    r0f, c0f = np.floor(rows), np.floor(cols)
    fr = (rows - r0f).astype(np.float32)[:, None]
    fc = (cols - c0f).astype(np.float32)[:, None]
    r0 = r0f.astype(np.intp) % n_rows
    c0 = c0f.astype(np.intp) % n_cols
    r1, c1 = (r0 + 1) % n_rows, (c0 + 1) % n_cols
    flat = tex.reshape(-1, 3)
    a, b = flat[r0 * n_cols + c0].astype(np.float32), flat[r0 * n_cols + c1].astype(np.float32)
    c, d = flat[r1 * n_cols + c0].astype(np.float32), flat[r1 * n_cols + c1].astype(np.float32)
    top = a + (b - a) * fc
    return top + (c + (d - c) * fc - top) * fr


# --------------------------------------------------------------------------- environment


class NavigationEnv:
    """Ground-plane navigation with a forward-looking camera; see the module docstring.

    ``reset()`` returns to the seeded start pose; ``step(action)`` clips the action to
    ``[ACTION_LOW, ACTION_HIGH]``, moves the camera and returns the new frame.
    """

    ACTION_DIM = 3
    ACTION_NAMES = ("forward", "lateral", "yaw")
    ACTION_LOW = (0.0, -0.25, -0.5)  # metres, metres, radians per step
    ACTION_HIGH = (0.5, 0.25, 0.5)
    POSE_NAMES = ("x", "y", "heading")
    CAMERA_HEIGHT = 1.2  # metres above the ground
    PITCH = math.radians(18.0)  # downward tilt of the optical axis
    HFOV = math.radians(90.0)

    def __init__(self, seed: int, image_size: int = 128) -> None:
        if image_size < 16:
            raise ValueError(f"image_size must be at least 16, got {image_size}")
        self.seed = int(seed)
        self.image_size = int(image_size)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0x4E4156]))
        self._levels = _world_pyramid(rng)
        self._pano = _panorama(rng).astype(np.float32)
        world = GRID * TILE * TEXEL
        self._start = np.array([*rng.uniform(0, world, size=2), rng.uniform(-math.pi, math.pi)])
        self._camera = _camera(self.image_size, self.CAMERA_HEIGHT, self.PITCH, self.HFOV)
        self._pose = self._start.copy()

    # -- actions

    @classmethod
    def clip_action(cls, action: np.ndarray | list[float] | tuple[float, ...]) -> np.ndarray:
        """float64 [3] action clipped to the bounds; raises on a wrong shape or non-finite value."""
        return clip_to_bounds(action, cls.ACTION_LOW, cls.ACTION_HIGH)

    # -- API

    @property
    def pose(self) -> np.ndarray:
        """float64 [3]: (x, y, heading) of the camera."""
        return self._pose.copy()

    def reset(self) -> np.ndarray:
        """Back to the seeded start pose; returns its frame."""
        self._pose = self._start.copy()
        return self.render()

    def set_pose(self, pose: np.ndarray | list[float] | tuple[float, float, float]) -> None:
        """Put the camera at (x, y, heading) without rendering: the world is static, so a pose is
        the whole state (an oracle planner renders candidates' end poses this way)."""
        pose = np.asarray(pose, dtype=np.float64).reshape(-1)
        if pose.shape != (3,) or not np.isfinite(pose).all():
            raise ValueError(f"a pose is 3 finite numbers (x, y, heading), got {pose!r}")
        self._pose = pose.copy()

    def step(self, action: np.ndarray | list[float] | tuple[float, ...]) -> np.ndarray:
        """Apply a camera-relative action (translate, then turn); returns the new frame."""
        forward, lateral, yaw = self.clip_action(action)
        x, y, h = self._pose
        c, s = math.cos(h), math.sin(h)
        self._pose = np.array([x + forward * c - lateral * s, y + forward * s + lateral * c, h + yaw])
        return self.render()

    def render(self) -> np.ndarray:
        """uint8 [H, W, 3] view from the current pose."""
        cam = self._camera
        x, y, h = self._pose
        c, s = math.cos(h), math.sin(h)
        out = np.empty((self.image_size * self.image_size, 3), dtype=np.float32)
        for level, (idx, pts, fog) in enumerate(
            zip(cam.ground_idx, cam.ground_pts, cam.ground_fog, strict=True)
        ):
            if idx.size == 0:
                continue
            wx = x + pts[:, 0] * c - pts[:, 1] * s
            wy = y + pts[:, 0] * s + pts[:, 1] * c
            texel = TEXEL * (1 << level)
            # Texture row grows southwards; texel centres sit at integer coordinates.
            rgb = _sample_wrap(self._levels[level], -wy / texel - 0.5, wx / texel - 0.5)
            out[idx] = rgb + (_HAZE - rgb) * fog
        out[cam.haze_idx] = _HAZE
        if cam.sky_idx.size:
            col = (h + cam.sky_az) * (_PANO_WIDTH / (2 * math.pi))
            out[cam.sky_idx] = _sample_wrap(self._pano, cam.sky_row, col)
        out *= cam.vignette
        return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(self.image_size, self.image_size, 3)


@cache
def _camera(size: int, height: float, pitch: float, hfov: float) -> _Camera:
    return _Camera(size, height, pitch, hfov)
