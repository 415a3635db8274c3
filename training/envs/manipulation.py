"""A table-top pushing world: an end effector moves by displacements and pushes blocks.

Scene. A 1 m x 1 m table (its top is z = 0, covered with a photograph from scikit-image) stands
on a gravel floor. A few textured, coloured blocks lie on it. The end effector is a small
two-finger gripper on a vertical arm; its tool point (the finger tips) is ``ee_position``. A fixed
pinhole camera looks at the table from the front and above, so the gripper grows as it rises
towards the camera, and a light from above casts hard shadows (the gripper's shadow on the table
tells its height). Frames are ray-cast with NumPy: ray–box and ray–sphere tests per pixel, a
z-buffer, Lambert shading and shadow rays; the static table and floor are rendered once.

Actions. ``(dx, dy, dz, gripper)``: a displacement of the tool point in table metres, each
clipped to ±0.1, and a change of the gripper closure clipped to ±0.75 (positive closes; the
closure g lives in [0, 1] and the gripper counts as closed when g >= 0.5). The tool point stays in
the workspace ``[0, 1] x [0, 1] x [0, Z_MAX]``.

Physics (simple and deterministic). The motion is taken in increments of at most 5 mm. The tool
point cannot sink into the top of a block. A tool point below a block's top pushes it: the block
is moved out of the tool's disc (radius ``PUSH_RADIUS``) along the contact normal, and blocks it
runs into are moved out of each other in turn; blocks stay on the table. Closing the gripper with
the tool point on or in a block's footprint picks that block up; it then follows the tool point
until the gripper opens, when it drops to the table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
from skimage.transform import resize

from training.data.photos import available_photos, square_photo, texture
from training.envs.bounds import clip_to_bounds

__all__ = ["ManipulationEnv"]

_STEP = 0.005  # physics increment, metres
_LIGHT = np.array([-0.2, -0.25, 1.0]) / np.linalg.norm([-0.2, -0.25, 1.0])  # towards the light
_AMBIENT = 0.45
_FLOOR_Z = -0.75
_BLOCK_COLOURS = np.array(
    [[200, 40, 35], [40, 150, 60], [35, 80, 200], [225, 185, 30], [150, 60, 170], [230, 120, 30]],
    dtype=np.float32,
)


@dataclass
class _Block:
    x: float  # centre of the footprint
    y: float
    z: float  # bottom
    size: float  # side of the square footprint
    height: float
    colour: np.ndarray  # float32 [3], 0-255
    texture: np.ndarray  # float32 [R, R] in [0, 1]

    def lo_hi(self) -> tuple[np.ndarray, np.ndarray]:
        h = self.size / 2
        return (
            np.array([self.x - h, self.y - h, self.z]),
            np.array([self.x + h, self.y + h, self.z + self.height]),
        )


# --------------------------------------------------------------------------- ray casting


def _ray_boxes(
    origin: np.ndarray, dirs: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Slab test. origin [3] or [N, 3], dirs [N, 3], lo/hi [M, 3] → (t [M, N], hit axis [M, N]).

    t is the entry distance along dirs (inf on a miss or when the box lies behind); a ray whose
    origin is inside a box gets t = 0.
    """
    # A zero direction component would give 0 * inf; a tiny one keeps the slab test exact enough.
    d = np.where(np.abs(dirs) < 1e-12, 1e-12, dirs)
    inv = 1.0 / d  # [N, 3]
    o = np.broadcast_to(origin, dirs.shape)
    near = far = axis = None
    for k in range(3):  # per axis on [M, N] arrays: much faster than reducing a length-3 axis
        t1 = (lo[:, k, None] - o[None, :, k]) * inv[None, :, k]
        t2 = (hi[:, k, None] - o[None, :, k]) * inv[None, :, k]
        tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
        if near is None:
            near, far, axis = tmin, tmax, np.zeros(tmin.shape, dtype=np.intp)
        else:
            axis = np.where(tmin > near, k, axis)
            near, far = np.maximum(near, tmin), np.minimum(far, tmax)
    hit = (near <= far) & (far > 0)
    return np.where(hit, np.maximum(near, 0.0), np.inf), axis


def _ray_sphere(origin: np.ndarray, dirs: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """Distance to a sphere along unit dirs [N, 3] from origin [3] or [N, 3]; inf on a miss."""
    oc = origin - centre
    b = (dirs * oc).sum(-1)
    c = (oc * oc).sum(-1) - radius * radius
    disc = b * b - c
    root = np.sqrt(np.maximum(disc, 0.0))
    t = np.where(-b - root > 0, -b - root, -b + root)
    return np.where((disc >= 0) & (t > 0), t, np.inf)


def _box_normals(axis: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Outward normal [N, 3] of the face a ray entered through: -sign(dir) on the hit axis."""
    n = np.zeros_like(dirs)
    rows = np.arange(len(dirs))
    n[rows, axis] = -np.sign(dirs[rows, axis])
    return n


def _face_uv(
    p: np.ndarray, axis: np.ndarray, lo: np.ndarray, size: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Texture coordinates in [0, 1) on a box face: the two coordinates other than the hit axis."""
    q = (p - lo) / size  # [N, 3]
    u = np.where(axis == 0, q[:, 1], q[:, 0])
    v = np.where(axis == 2, q[:, 1], q[:, 2])
    return np.clip(u, 0, 0.999), np.clip(v, 0, 0.999)


# --------------------------------------------------------------------------- textures


@cache
def _gray_texture(name: str, size: int) -> np.ndarray:
    img = texture(name).astype(np.float32)
    img = resize(img, (size, size), order=1, anti_aliasing=True)
    out = (img - img.min()) / max(float(np.ptp(img)), 1e-6)
    out.setflags(write=False)
    return out.astype(np.float32)


@cache
def _table_texture(name: str, size: int = 384) -> np.ndarray:
    """The photo centre-cropped to a square, float32 [size, size, 3]: the table mat."""
    crop = square_photo(name).astype(np.float32)
    out = resize(crop, (size, size), order=1, anti_aliasing=True, preserve_range=True).astype(np.float32)
    out.setflags(write=False)
    return out


def _lookup(tex: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Nearest lookup with wrap; u along columns, v along rows, in texture widths."""
    rows, cols = tex.shape[:2]
    return tex[(np.floor(v * rows).astype(np.intp)) % rows, (np.floor(u * cols).astype(np.intp)) % cols]


# --------------------------------------------------------------------------- camera


class _Camera:
    """Fixed pinhole camera: per-pixel unit rays [H*W, 3] (supersampled by `ss`)."""

    POSITION = np.array([0.5, -0.1, 1.25])
    TARGET = np.array([0.5, 0.49, 0.0])
    HFOV = math.radians(49.0)

    def __init__(self, size: int, ss: int = 1) -> None:
        fwd = self.TARGET - self.POSITION
        fwd /= np.linalg.norm(fwd)
        right = np.cross(fwd, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        down = np.cross(fwd, right)
        n = size * ss
        f = (n / 2) / math.tan(self.HFOV / 2)
        c = (np.arange(n) - (n - 1) / 2) / f
        yc, xc = np.meshgrid(c, c, indexing="ij")
        d = fwd + xc[..., None] * right + yc[..., None] * down
        self.dirs = (d / np.linalg.norm(d, axis=-1, keepdims=True)).reshape(-1, 3)  # [n*n, 3]
        self.origin = self.POSITION.copy()


@cache
def _camera(size: int, ss: int) -> _Camera:
    return _Camera(size, ss)


# --------------------------------------------------------------------------- environment


class ManipulationEnv:
    """Table-top pushing and carrying; see the module docstring for the rules."""

    ACTION_DIM = 4
    ACTION_NAMES = ("dx", "dy", "dz", "gripper")
    ACTION_LOW = (-0.1, -0.1, -0.1, -0.75)
    ACTION_HIGH = (0.1, 0.1, 0.1, 0.75)
    POSE_NAMES = ("x", "y", "z", "gripper")
    Z_MAX = 0.4  # highest tool point, metres above the table
    PUSH_RADIUS = 0.03  # radius of the tool's pushing disc
    GRASP_MARGIN = 0.02  # how far above a block's top the tool may be and still grasp it

    def __init__(self, seed: int, image_size: int = 128, num_blocks: int | None = None) -> None:
        if image_size < 16:
            raise ValueError(f"image_size must be at least 16, got {image_size}")
        self.seed = int(seed)
        self.image_size = int(image_size)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0x4D414E]))
        photo = str(rng.choice(available_photos()))
        # Soften the photo towards a neutral grey so the blocks stand out from the mat.
        self._table_tex = 0.65 * _table_texture(photo) + 0.35 * np.float32(150.0)
        n = int(rng.integers(2, 5)) if num_blocks is None else int(num_blocks)
        self._initial_blocks = self._place_blocks(rng, n)
        self._initial_ee = np.array([*rng.uniform(0.25, 0.75, size=2), rng.uniform(0.15, 0.3)])
        self._cam = _camera(self.image_size, 1)
        self._background = self._render_static()
        self._restore()

    @staticmethod
    def _place_blocks(rng: np.random.Generator, n: int) -> list[_Block]:
        colours = rng.permutation(len(_BLOCK_COLOURS))
        blocks: list[_Block] = []
        while len(blocks) < n:
            size = float(rng.uniform(0.09, 0.14))
            x, y = rng.uniform(0.15, 0.85, size=2)
            # Rejection sampling: keep blocks apart so the start state has no contacts.
            if any(max(abs(x - b.x), abs(y - b.y)) < (size + b.size) / 2 + 0.05 for b in blocks):
                continue
            name = ("brick", "gravel", "grass")[int(rng.integers(3))]
            tex = 0.6 + 0.4 * _gray_texture(name, 64)
            blocks.append(
                _Block(
                    float(x),
                    float(y),
                    0.0,
                    size,
                    float(rng.uniform(0.05, 0.09)),
                    _BLOCK_COLOURS[colours[len(blocks) % len(colours)]],
                    tex,
                )
            )
        return blocks

    def _restore(self) -> None:
        self._ee = self._initial_ee.copy()
        self._grip = 0.0
        self._blocks = [
            _Block(b.x, b.y, b.z, b.size, b.height, b.colour, b.texture) for b in self._initial_blocks
        ]
        self._carried: int | None = None
        self._carry_offset = np.zeros(3)

    # -- actions

    @classmethod
    def clip_action(cls, action: np.ndarray | list[float] | tuple[float, ...]) -> np.ndarray:
        """float64 [4] action clipped to the bounds; raises on a wrong shape or non-finite value."""
        return clip_to_bounds(action, cls.ACTION_LOW, cls.ACTION_HIGH)

    def workspace(self) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) float64 [3] bounds of the tool point."""
        return np.zeros(3), np.array([1.0, 1.0, self.Z_MAX])

    # -- state

    @property
    def ee_position(self) -> np.ndarray:
        """float64 [3]: the tool point (x, y, z) in table metres."""
        return self._ee.copy()

    @property
    def gripper(self) -> float:
        """Closure in [0, 1]; closed at >= 0.5."""
        return self._grip

    @property
    def pose(self) -> np.ndarray:
        """float64 [4]: (x, y, z, gripper closure)."""
        return np.array([*self._ee, self._grip])

    @property
    def blocks(self) -> np.ndarray:
        """float64 [n, 3]: each block's footprint centre (x, y) and bottom z."""
        return np.array([[b.x, b.y, b.z] for b in self._blocks]).reshape(-1, 3)

    @property
    def block_sizes(self) -> np.ndarray:
        """float64 [n, 2]: each block's footprint side and height."""
        return np.array([[b.size, b.height] for b in self._blocks]).reshape(-1, 2)

    @property
    def carried(self) -> int | None:
        """Index of the block held by the closed gripper, if any."""
        return self._carried

    def reset(self) -> np.ndarray:
        """Back to the seeded start state; returns its frame."""
        self._restore()
        return self.render()

    # -- physics

    def get_state(self) -> np.ndarray:
        """The whole dynamic state as float64 [8 + 3n]: tool point xyz, gripper closure, carried block
        index (-1 for none), carry offset xyz, then each block's (x, y, bottom z). Sizes, colours and
        textures are fixed by the seed, so `set_state` of this vector restores the world exactly."""
        carried = -1.0 if self._carried is None else float(self._carried)
        blocks = [v for b in self._blocks for v in (b.x, b.y, b.z)]
        return np.array([*self._ee, self._grip, carried, *self._carry_offset, *blocks], dtype=np.float64)

    def set_state(self, state: np.ndarray) -> None:
        """Restore a vector from `get_state` (of an env with the same seed)."""
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (8 + 3 * len(self._blocks),):
            raise ValueError(f"state must be [{8 + 3 * len(self._blocks)}] for {len(self._blocks)} blocks, got {state.shape}")
        self._ee = state[:3].copy()
        self._grip = float(state[3])
        self._carried = None if state[4] < 0 else int(state[4])
        self._carry_offset = state[5:8].copy()
        for b, (x, y, z) in zip(self._blocks, state[8:].reshape(-1, 3), strict=True):
            b.x, b.y, b.z = float(x), float(y), float(z)

    def step(self, action: np.ndarray | list[float] | tuple[float, ...]) -> np.ndarray:
        """Apply a displacement and gripper change (clipped); returns the new frame."""
        self.advance(action)
        return self.render()

    def advance(self, action: np.ndarray | list[float] | tuple[float, ...]) -> None:
        """`step` without rendering: the physics only (an oracle planner simulates many candidates)."""
        a = self.clip_action(action)
        low, high = self.workspace()
        target = np.clip(self._ee + a[:3], low, high)
        delta = target - self._ee
        n = max(1, math.ceil(float(np.abs(delta).max()) / _STEP))
        for _ in range(n):
            self._move(delta / n)
        self._set_grip(float(np.clip(self._grip + a[3], 0.0, 1.0)))

    def _move(self, d: np.ndarray) -> None:
        prev = self._ee
        new = prev + d
        if self._carried is not None:
            new[2] = max(new[2], -self._carry_offset[2])  # the held block cannot enter the table
        for i, b in enumerate(self._blocks):
            if i == self._carried:
                continue
            top = b.z + b.height
            inside = abs(new[0] - b.x) <= b.size / 2 and abs(new[1] - b.y) <= b.size / 2
            if inside and prev[2] >= top - 1e-9 and new[2] < top:
                new[2] = top  # resting on the block's top
        self._ee = new
        moved: list[int] = []
        for i, b in enumerate(self._blocks):
            if i == self._carried or new[2] >= b.z + b.height - 1e-9:
                continue
            push = _disc_out_of_square(new[:2], self.PUSH_RADIUS, b)
            if push is not None:
                b.x, b.y = b.x + push[0], b.y + push[1]
                moved.append(i)
        self._separate(moved)
        if self._carried is not None:
            b = self._blocks[self._carried]
            b.x, b.y, b.z = (self._ee + self._carry_offset).tolist()

    def _separate(self, moved: list[int]) -> None:
        """Push blocks out of each other, starting from those just moved; keep them on the table."""
        queue = list(moved)
        done: set[int] = set()
        for i in queue:
            self._clamp(self._blocks[i])
        while queue:
            i = queue.pop(0)
            if i in done:
                continue
            done.add(i)
            a = self._blocks[i]
            for j, b in enumerate(self._blocks):
                if j in (i, self._carried) or j in done:
                    continue
                if a.z > b.z + b.height or b.z > a.z + a.height:
                    continue
                ox = (a.size + b.size) / 2 - abs(a.x - b.x)
                oy = (a.size + b.size) / 2 - abs(a.y - b.y)
                if ox <= 0 or oy <= 0:
                    continue
                # Move b along the axis of least overlap, away from a.
                if ox < oy:
                    b.x += math.copysign(ox, b.x - a.x or 1.0)
                else:
                    b.y += math.copysign(oy, b.y - a.y or 1.0)
                self._clamp(b)
                queue.append(j)

    @staticmethod
    def _clamp(b: _Block) -> None:
        h = b.size / 2
        b.x, b.y = min(max(b.x, h), 1 - h), min(max(b.y, h), 1 - h)

    def _set_grip(self, g: float) -> None:
        was_closed, self._grip = self._grip >= 0.5, g
        closed = g >= 0.5
        if closed and not was_closed and self._carried is None:
            for i, b in enumerate(self._blocks):
                inside = abs(self._ee[0] - b.x) <= b.size / 2 and abs(self._ee[1] - b.y) <= b.size / 2
                if inside and b.z <= self._ee[2] <= b.z + b.height + self.GRASP_MARGIN:
                    self._carried = i
                    self._carry_offset = np.array([b.x, b.y, b.z]) - self._ee
                    break
        elif not closed and self._carried is not None:
            b = self._blocks[self._carried]
            self._carried = None
            b.z = 0.0  # dropped onto the table
            self._separate([self._blocks.index(b)])

    # -- rendering

    def _effector_parts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Boxes (lo [3, 3], hi [3, 3]: two fingers and the arm) and the wrist sphere."""
        x, y, z = self._ee
        sep = 0.075 - 0.045 * self._grip  # finger gap narrows as the gripper closes
        fw, fd, fh = 0.009, 0.014, 0.045
        lo = np.array(
            [
                [x - sep / 2 - fw, y - fd, z],
                [x + sep / 2 - fw, y - fd, z],
                [x - 0.016, y - 0.016, z + fh + 0.05],
            ]
        )
        hi = np.array(
            [
                [x - sep / 2 + fw, y + fd, z + fh + 0.01],
                [x + sep / 2 + fw, y + fd, z + fh + 0.01],
                [x + 0.016, y + 0.016, 1.6],
            ]
        )
        return lo, hi, np.array([x, y, z + fh + 0.035]), 0.042

    def _render_static(self) -> np.ndarray:
        """Table and floor, shaded, 2x supersampled then averaged: float32 [H*W, 3]."""
        ss = 2
        cam = _camera(self.image_size, ss)
        colour, _, _ = self._shade_static(cam.origin, cam.dirs)
        n = self.image_size
        img = colour.reshape(n, ss, n, ss, 3).mean(axis=(1, 3))
        # Hit points and normals at pixel centres, for shadows cast by the moving parts.
        _, points, self._bg_normal = self._shade_static(self._cam.origin, self._cam.dirs)
        self._bg_t = np.linalg.norm(points - self._cam.origin, axis=-1)
        return img.reshape(-1, 3).astype(np.float32)

    def _shade_static(
        self, origin: np.ndarray, dirs: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(colour float32 [N, 3], hit point [N, 3], normal [N, 3]) of the table and floor."""
        table_lo, table_hi = np.array([[0.0, 0.0, -0.04]]), np.array([[1.0, 1.0, 0.0]])
        t_table, axis = _ray_boxes(origin, dirs, table_lo, table_hi)
        t_table, axis = t_table[0], axis[0]
        with np.errstate(divide="ignore"):
            t_floor = np.where(dirs[:, 2] < 0, (_FLOOR_Z - origin[2]) / dirs[:, 2], np.inf)
        on_table = t_table < t_floor
        t = np.where(on_table, t_table, t_floor)
        t = np.where(np.isfinite(t), t, 50.0)
        p = origin + t[:, None] * dirs
        colour = np.empty_like(dirs, dtype=np.float32)
        gravel = _gray_texture("gravel", 256)
        floor = (0.5 + 0.5 * _lookup(gravel, p[:, 0] / 0.6, p[:, 1] / 0.6))[:, None] * np.float32(
            [105, 100, 95]
        )
        colour[:] = floor
        top = on_table & (axis == 2)
        mat = _lookup(self._table_tex, p[top, 0], 1.0 - p[top, 1])  # photo upright seen from the front
        edge = np.minimum.reduce([p[top, 0], p[top, 1], 1 - p[top, 0], 1 - p[top, 1]])
        mat = np.where((edge < 0.012)[:, None], np.float32([90, 60, 40]), mat)  # a wooden rim
        colour[top] = mat
        colour[on_table & (axis != 2)] = np.float32([80, 52, 35])
        normal = np.zeros_like(dirs)
        normal[:, 2] = 1.0
        normal[on_table] = _box_normals(axis[on_table], dirs[on_table])
        shade = _AMBIENT + (1 - _AMBIENT) * np.clip(normal @ _LIGHT, 0, 1)
        # The floor lies in the table's shadow where a ray towards the light meets the table.
        floor_pts = ~on_table
        t_sh, _ = _ray_boxes(
            p[floor_pts] + 1e-4 * _LIGHT,
            np.broadcast_to(_LIGHT, (int(floor_pts.sum()), 3)),
            table_lo,
            table_hi,
        )
        shade[floor_pts] = np.where(np.isfinite(t_sh[0]), _AMBIENT, shade[floor_pts])
        return colour * shade[:, None].astype(np.float32), p, normal

    def render(self) -> np.ndarray:
        """uint8 [H, W, 3] view from the fixed camera."""
        cam = self._cam
        dirs, origin = cam.dirs, cam.origin
        n_pix = dirs.shape[0]
        box_lo, box_hi, wrist, radius = self._effector_parts()
        blocks_lo = np.array([b.lo_hi()[0] for b in self._blocks]).reshape(-1, 3)
        blocks_hi = np.array([b.lo_hi()[1] for b in self._blocks]).reshape(-1, 3)
        lo = np.concatenate([blocks_lo, box_lo])  # [M, 3]: blocks, finger, finger, arm
        hi = np.concatenate([blocks_hi, box_hi])
        n_blocks = len(self._blocks)
        t_box, axis = _ray_boxes(origin, dirs, lo, hi)  # [M, N]
        t_sph = _ray_sphere(origin, dirs, wrist, radius)[None]  # [1, N]
        t_all = np.concatenate([t_box, t_sph, self._bg_t[None]])  # [M + 2, N]
        front = t_all.argmin(axis=0)  # index of the nearest surface per pixel
        t = t_all[front, np.arange(n_pix)]
        p = origin + t[:, None] * dirs
        out = self._background.copy()
        normal = self._bg_normal.copy()
        m_box = lo.shape[0]
        albedo = np.zeros_like(out)
        dynamic = front < m_box + 1
        for k in range(m_box):
            sel = front == k
            if not sel.any():
                continue
            normal[sel] = _box_normals(axis[k, sel], dirs[sel])
            if k < n_blocks:
                b = self._blocks[k]
                u, v = _face_uv(p[sel], axis[k, sel], lo[k], hi[k] - lo[k])
                albedo[sel] = b.colour * _lookup(b.texture, u, v)[:, None]
            else:
                albedo[sel] = np.float32([70, 72, 78]) if k < m_box - 1 else np.float32([150, 152, 158])
        sel = front == m_box
        if sel.any():
            normal[sel] = (p[sel] - wrist) / radius
            albedo[sel] = np.float32([235, 120, 40]) if self._grip >= 0.5 else np.float32([225, 225, 230])
        # Shadow rays towards the light, against every moving part except the one hit.
        origins = p + 1e-4 * normal
        light = np.broadcast_to(_LIGHT, dirs.shape)
        t_sb, _ = _ray_boxes(origins, light, lo, hi)  # [M, N]
        t_sb[front[None, :] == np.arange(m_box)[:, None]] = np.inf
        shadowed = np.isfinite(t_sb).any(axis=0)
        t_ss = _ray_sphere(origins, light, wrist, radius)
        shadowed |= np.isfinite(t_ss) & (front != m_box)
        lambert = np.clip(normal @ _LIGHT, 0, 1).astype(np.float32)
        shade = np.where(shadowed, _AMBIENT, _AMBIENT + (1 - _AMBIENT) * lambert)
        out[dynamic] = albedo[dynamic] * shade[dynamic, None]
        # Static pixels were shaded without these shadows: darken them to ambient where shadowed.
        static_shadow = ~dynamic & shadowed
        lit = _AMBIENT + (1 - _AMBIENT) * lambert[static_shadow]
        out[static_shadow] *= (_AMBIENT / lit)[:, None]
        if sel.any():  # a specular glint makes the wrist read as a round, shiny blob
            half = _LIGHT - dirs[sel]
            half /= np.linalg.norm(half, axis=-1, keepdims=True)
            spec = np.clip((normal[sel] * half).sum(-1), 0, 1) ** 40 * (~shadowed[sel])
            out[sel] += 120.0 * spec[:, None].astype(np.float32)
        n = self.image_size
        return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(n, n, 3)


def _disc_out_of_square(c: np.ndarray, r: float, b: _Block) -> np.ndarray | None:
    """Displacement [2] that moves square block b out of the disc (centre c, radius r), or None."""
    h = b.size / 2
    qx, qy = min(max(c[0], b.x - h), b.x + h), min(max(c[1], b.y - h), b.y + h)  # closest point
    dx, dy = qx - c[0], qy - c[1]
    dist = math.hypot(dx, dy)
    if dist >= r:
        return None
    if dist > 1e-12:  # centre outside the square: push along the contact normal
        return np.array([dx, dy]) / dist * (r - dist)
    # Centre inside the square: push out along the shallower axis.
    ox, oy = h + r - abs(b.x - c[0]), h + r - abs(b.y - c[1])
    if ox < oy:
        return np.array([math.copysign(ox, b.x - c[0] or 1.0), 0.0])
    return np.array([0.0, math.copysign(oy, b.y - c[1] or 1.0)])
