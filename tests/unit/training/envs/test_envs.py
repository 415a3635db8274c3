"""Tests of the action environments, the recorded episodes and the trajectory metrics."""

from __future__ import annotations

import json
import math

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.envs import (
    ManipulationEnv,
    NavigationEnv,
    ate,
    delta_xyz,
    load_episodes,
    poses_from_actions,
    record_episode,
    rpe,
    rpe_rotation,
    write_episodes,
)
from training.envs.episodes import MANIFEST_NAME

pytestmark = pytest.mark.unit

SIZE = 64  # small frames keep the tests fast; the geometry tests use 128


def _gray(frame: np.ndarray) -> np.ndarray:
    return frame.astype(np.float64).mean(axis=2)


def _best_offset(before: np.ndarray, after: np.ndarray, rows: slice, cols: slice, axis: int) -> int:
    """Offset o (along rows for axis 0, columns for axis 1) minimising the SSD between the patch
    after[rows, cols] and before shifted by o: content moved by -o from before to after."""
    a, b = _gray(before), _gray(after)
    patch = b[rows, cols]
    scores = {}
    for o in range(-30, 31):
        r = slice(rows.start + o, rows.stop + o) if axis == 0 else rows
        c = slice(cols.start + o, cols.stop + o) if axis == 1 else cols
        if min(r.start, c.start) < 0 or r.stop > a.shape[0] or c.stop > a.shape[1]:
            continue
        scores[o] = float(((a[r, c] - patch) ** 2).mean())
    return min(scores, key=scores.__getitem__)


# --------------------------------------------------------------------------- navigation


def test_navigation_is_deterministic_from_the_seed() -> None:
    actions = [(0.3, 0.1, 0.2), (0.5, -0.2, -0.4), (0.1, 0.0, 0.1)]
    runs = []
    for seed in (3, 3, 4):
        env = NavigationEnv(seed, image_size=SIZE)
        runs.append(np.stack([env.reset(), *[env.step(a) for a in actions]]))
    assert runs[0].shape == (4, SIZE, SIZE, 3) and runs[0].dtype == np.uint8
    assert np.array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0][0], runs[2][0])


def test_navigation_zero_action_keeps_the_frame_and_motion_changes_it() -> None:
    env = NavigationEnv(0, image_size=SIZE)
    start = env.reset()
    start_pose = env.pose
    assert np.array_equal(env.step((0.0, 0.0, 0.0)), start)
    assert np.array_equal(env.pose, start_pose)
    moved = env.step((0.3, 0.0, 0.0))
    assert np.abs(moved.astype(int) - start.astype(int)).mean() > 2.0
    env.reset()
    assert np.array_equal(env.render(), start)  # reset really returns to the start pose


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_navigation_forward_moves_ground_content_down(seed: int) -> None:
    env = NavigationEnv(seed, image_size=128)
    before = env.reset()
    after = env.step((0.1, 0.0, 0.0))
    # Ground below the centre comes closer, so it reappears lower in the image: the patch of
    # the new frame is found higher up in the old one.
    offset = _best_offset(before, after, rows=slice(84, 112), cols=slice(40, 88), axis=0)
    assert offset <= -1


@pytest.mark.parametrize("seed", [0, 3, 5])
def test_navigation_yaw_shifts_the_horizon_band_sideways(seed: int) -> None:
    env = NavigationEnv(seed, image_size=128)
    before = env.reset()
    band = (slice(8, 42), slice(34, 94))  # sky, clouds and the distant ridge above the horizon
    left = env.step((0.0, 0.0, 0.2))
    # Turning left by 0.2 rad moves the scene right by about f * 0.2 = 12.8 px (f = 64 px).
    assert -18 <= _best_offset(before, left, *band, axis=1) <= -10
    env.reset()
    right = env.step((0.0, 0.0, -0.2))
    assert 10 <= _best_offset(before, right, *band, axis=1) <= 18


def test_navigation_step_moves_in_the_camera_frame() -> None:
    env = NavigationEnv(1, image_size=SIZE)
    env.reset()
    x, y, h = env.pose
    env.step((0.4, 0.1, 0.3))
    expected = (x + 0.4 * math.cos(h) - 0.1 * math.sin(h), y + 0.4 * math.sin(h) + 0.1 * math.cos(h), h + 0.3)
    assert env.pose == pytest.approx(expected)


def test_navigation_actions_are_clipped_to_the_bounds() -> None:
    env = NavigationEnv(2, image_size=SIZE)
    env.reset()
    frame_big = env.step((3.0, -1.0, 9.0))
    pose_big = env.pose
    env.reset()
    frame_clipped = env.step((0.5, -0.25, 0.5))
    assert np.array_equal(env.pose, pose_big)
    assert np.array_equal(frame_big, frame_clipped)
    start = env.reset()
    assert np.array_equal(env.step((-1.0, 0.0, 0.0)), start)  # no reversing: forward is clipped at 0
    with pytest.raises(ValueError):
        env.step((0.1, 0.0))
    with pytest.raises(ValueError):
        env.step((math.nan, 0.0, 0.0))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=4, max_size=4))
def test_clip_action_stays_within_bounds(values: list[float]) -> None:
    for cls, a in ((NavigationEnv, values[:3]), (ManipulationEnv, values)):
        clipped = cls.clip_action(a)
        assert np.all(clipped >= np.array(cls.ACTION_LOW)) and np.all(clipped <= np.array(cls.ACTION_HIGH))
        inside = (np.array(a) >= cls.ACTION_LOW) & (np.array(a) <= cls.ACTION_HIGH)
        assert np.array_equal(clipped[inside], np.array(a)[inside])


# --------------------------------------------------------------------------- manipulation


def _drive(env: ManipulationEnv, target: tuple[float, float, float], max_steps: int = 40) -> None:
    """Move the tool point to target with bounded steps (gripper unchanged)."""
    for _ in range(max_steps):
        d = np.asarray(target) - env.ee_position
        if np.abs(d).max() < 1e-9:
            return
        env.step((*np.clip(d, -0.1, 0.1), 0.0))
    raise AssertionError(f"did not reach {target}, at {env.ee_position}")


def test_manipulation_is_deterministic_from_the_seed() -> None:
    actions = [(0.1, -0.05, -0.1, 0.0), (-0.03, 0.1, -0.1, 0.7), (0.0, 0.0, 0.1, -0.7)]
    runs, blocks = [], []
    for seed in (7, 7, 8):
        env = ManipulationEnv(seed, image_size=SIZE)
        runs.append(np.stack([env.reset(), *[env.step(a) for a in actions]]))
        blocks.append(env.blocks)
    assert runs[0].shape == (4, SIZE, SIZE, 3) and runs[0].dtype == np.uint8
    assert np.array_equal(runs[0], runs[1]) and np.array_equal(blocks[0], blocks[1])
    assert not np.array_equal(runs[0][0], runs[2][0])


def test_manipulation_actions_are_clipped_and_the_workspace_bounds_the_tool() -> None:
    env = ManipulationEnv(0, image_size=SIZE, num_blocks=1)
    env.reset()
    start = env.ee_position
    env.step((5.0, -5.0, 0.0, 0.0))
    assert env.ee_position == pytest.approx(start + [0.1, -0.1, 0.0])
    env.step((0.0, 0.0, 0.0, 9.0))
    assert env.gripper == pytest.approx(0.75)
    for _ in range(10):
        env.step((0.0, 0.0, 0.1, 0.0))
    assert env.ee_position[2] == pytest.approx(ManipulationEnv.Z_MAX)


def test_pushing_a_block_moves_it_along_the_motion() -> None:
    env = ManipulationEnv(4, image_size=SIZE, num_blocks=1)
    before_frame = env.reset()
    (bx, by, _), (size, _) = env.blocks[0], env.block_sizes[0]
    start_x = max(bx - size / 2 - 0.08, 0.0)
    _drive(env, (start_x, by, 0.3))
    _drive(env, (start_x, by, 0.01))
    assert env.blocks[0] == pytest.approx([bx, by, 0.0])  # not touched yet
    for _ in range(3):
        env.step((0.1, 0.0, 0.0, 0.0))
    nx, ny, nz = env.blocks[0]
    assert nx > bx + 0.1  # pushed towards +x by most of the remaining travel
    assert ny == pytest.approx(by, abs=1e-9) and nz == 0.0
    # The tool's disc stays just touching the block's face.
    assert env.ee_position[0] == pytest.approx(nx - size / 2 - ManipulationEnv.PUSH_RADIUS, abs=1e-6)
    assert np.abs(env.render().astype(int) - before_frame.astype(int)).max() > 50


def test_moving_in_free_space_leaves_blocks_alone() -> None:
    env = ManipulationEnv(5, image_size=SIZE)
    env.reset()
    start = env.blocks
    # High above the blocks, sweep the whole table.
    for target in [
        (0.05, 0.05, 0.3),
        (0.95, 0.05, 0.3),
        (0.95, 0.95, 0.3),
        (0.05, 0.95, 0.3),
        (0.5, 0.5, 0.3),
    ]:
        _drive(env, target)
    assert np.array_equal(env.blocks, start)
    # Low, but along a line no block comes near.
    env2 = ManipulationEnv(6, image_size=SIZE, num_blocks=1)
    env2.reset()
    bx, by, _ = env2.blocks[0]
    far_y = 0.05 if by > 0.5 else 0.95  # blocks lie within [0.15, 0.85] ± 0.07
    _drive(env2, (0.05, far_y, 0.3))
    _drive(env2, (0.05, far_y, 0.01))
    _drive(env2, (0.95, far_y, 0.01))
    assert env2.blocks[0] == pytest.approx([bx, by, 0.0])


def test_lowering_onto_a_block_rests_on_it_and_closing_carries_it() -> None:
    env = ManipulationEnv(9, image_size=SIZE, num_blocks=1)
    env.reset()
    (bx, by, _), (_, height) = env.blocks[0], env.block_sizes[0]
    _drive(env, (bx, by, 0.3))
    for _ in range(4):
        env.step((0.0, 0.0, -0.1, 0.0))
    assert env.ee_position[2] == pytest.approx(height)  # stopped by the block's top
    env.step((0.0, 0.0, 0.0, 0.75))  # close: grasp
    assert env.carried == 0
    env.step((0.1, 0.0, 0.1, 0.0))
    assert env.blocks[0] == pytest.approx([bx + 0.1, by, 0.1])
    env.step((0.0, 0.0, 0.0, -0.75))  # open: the block drops to the table where it is
    assert env.carried is None
    assert env.blocks[0] == pytest.approx([bx + 0.1, by, 0.0])


def test_manipulation_state_round_trips_while_carrying() -> None:
    """get_state/set_state restore everything the physics reads, a carried block included."""
    env = ManipulationEnv(9, image_size=SIZE, num_blocks=1)
    env.reset()
    (bx, by, _), (_, height) = env.blocks[0], env.block_sizes[0]
    _drive(env, (bx, by, height))
    env.step((0.0, 0.0, 0.0, 0.75))  # close: grasp
    assert env.carried == 0
    saved, frame = env.get_state(), env.render()
    follow = env.step([0.05, 0.0, 0.1, 0.0])
    other = ManipulationEnv(9, image_size=SIZE, num_blocks=1)
    other.set_state(saved)
    assert other.carried == 0 and np.array_equal(other.render(), frame)
    assert np.array_equal(other.step([0.05, 0.0, 0.1, 0.0]), follow)
    with pytest.raises(ValueError, match="state must be"):
        other.set_state(saved[:-1])


def test_navigation_set_pose_renders_that_pose() -> None:
    env = NavigationEnv(4, image_size=SIZE)
    env.reset()
    target = env.step([0.3, 0.1, 0.2])
    other = NavigationEnv(4, image_size=SIZE)
    other.set_pose(env.pose)
    assert np.array_equal(other.render(), target)
    with pytest.raises(ValueError, match="3 finite numbers"):
        other.set_pose([0.0, float("nan"), 0.0])


def test_gripper_height_changes_its_rendered_size() -> None:
    env = ManipulationEnv(11, image_size=128, num_blocks=1)
    env.reset()
    bx, by, _ = env.blocks[0]
    x, y = (0.2 if bx > 0.5 else 0.8), (0.3 if by > 0.5 else 0.7)  # away from the block
    areas = []
    for z in (0.0, 0.35):
        _drive(env, (x, y, z))
        opened = env.render().astype(int)
        closed = env.step((0.0, 0.0, 0.0, 0.75)).astype(int)  # fingers close, the blob turns orange
        env.step((0.0, 0.0, 0.0, -0.75))
        # Pixels that change with the gripper state all belong to the gripper: its image area.
        areas.append(int((np.abs(closed - opened).max(axis=2) > 30).sum()))
    assert areas[1] > 1.3 * areas[0] > 0  # nearer the camera, larger


# --------------------------------------------------------------------------- episodes


@pytest.mark.parametrize("env_name", ["navigation", "manipulation"])
def test_record_episode_is_deterministic_and_within_bounds(env_name: str) -> None:
    a = record_episode(env_name, 5, 6, image_size=SIZE)
    b = record_episode(env_name, 5, 6, image_size=SIZE)
    c = record_episode(env_name, 6, 6, image_size=SIZE)
    assert a.frames.shape == (13, SIZE, SIZE, 3) and a.poses.shape[0] == 13
    assert a.actions.dtype == np.float32 and a.actions.shape[0] == 6
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.actions, b.actions)
    assert not np.array_equal(a.actions, c.actions)
    cls = NavigationEnv if env_name == "navigation" else ManipulationEnv
    assert np.all(a.actions >= np.array(cls.ACTION_LOW, dtype=np.float32))
    assert np.all(a.actions <= np.array(cls.ACTION_HIGH, dtype=np.float32))
    # Smooth policy: consecutive frames always differ (the agent keeps moving).
    assert all(
        not np.array_equal(f, g) for f, g in zip(a.action_frames[:-1], a.action_frames[1:], strict=True)
    )


def test_navigation_episode_poses_follow_the_recorded_actions() -> None:
    ep = record_episode("navigation", 2, 8, image_size=SIZE, frames_per_action=2)
    assert len(ep.frames) == 2 * 8 + 1
    integrated = poses_from_actions(ep.poses[0], ep.actions, substeps=2)
    assert np.array_equal(integrated, ep.action_poses)  # exactly: same float32 actions, same rule
    # The in-between frame lies between the poses before and after its action.
    mid = ep.poses[1]
    assert np.linalg.norm(mid[:2] - ep.poses[0, :2]) < np.linalg.norm(ep.poses[2, :2] - ep.poses[0, :2])
    # Without sub-steps the integration differs (when it turns), so the split is really used.
    single = record_episode("navigation", 2, 8, image_size=SIZE, frames_per_action=1)
    assert np.array_equal(single.actions, ep.actions)
    assert np.array_equal(poses_from_actions(single.poses[0], single.actions), single.poses)


def test_manipulation_episode_records_blocks_and_displacements() -> None:
    ep = record_episode("manipulation", 4, 10, image_size=SIZE)
    assert ep.blocks is not None and ep.blocks.shape[:2] == (21, ep.blocks.shape[1])
    moved = ep.action_poses[1:, :3] - ep.action_poses[:-1, :3]
    # The tool goes where it is told, except when a block's top stops its descent.
    free = np.abs(moved - ep.actions[:, :3]).max(axis=1) < 1e-6
    assert free.mean() > 0.5
    assert delta_xyz(ep.actions[free], moved[free]) < 1e-5


@pytest.mark.parametrize("env_name", ["navigation", "manipulation"])
def test_episodes_round_trip_through_disk(tmp_path, env_name: str) -> None:
    paths = write_episodes(tmp_path, env_name, n=2, steps=4, seed=1, image_size=SIZE, fps=8.0)
    assert [p.name for p in paths] == ["episode_00000.mp4", "episode_00001.mp4"]
    lines = (tmp_path / MANIFEST_NAME).read_text().splitlines()
    assert len(lines) == 2
    loaded = load_episodes(tmp_path)
    assert len(loaded) == 2
    for line, ep in zip(lines, loaded, strict=True):
        rec = json.loads(line)
        direct = record_episode(env_name, rec["seed"], 4, image_size=SIZE)
        assert rec["fps"] == 8.0 and rec["frames_per_action"] == 2
        assert np.array_equal(np.array(rec["actions"], dtype=np.float32), direct.actions)
        assert np.array_equal(ep.actions, direct.actions) and ep.actions.dtype == np.float32
        assert np.array_equal(ep.poses, direct.poses)
        assert np.array_equal(np.array(rec["poses"]), direct.poses)
        if env_name == "manipulation":
            assert ep.blocks is not None and np.array_equal(ep.blocks, direct.blocks)
        with np.load(tmp_path / rec["arrays"], allow_pickle=False) as data:
            assert set(data.files) >= {"actions", "poses"}
        with av.open(str(tmp_path / rec["path"])) as container:
            assert sum(1 for _ in container.decode(video=0)) == 9
        assert ep.frames.shape == direct.frames.shape == (9, SIZE, SIZE, 3)
        assert np.abs(ep.frames.astype(int) - direct.frames.astype(int)).mean() < 6.0  # lossy codec
    # Different episodes got different seeds.
    assert not np.array_equal(loaded[0].actions, loaded[1].actions)


# --------------------------------------------------------------------------- metrics


def test_ate_of_a_constant_offset_is_its_length() -> None:
    gt = np.cumsum(np.ones((10, 2)), axis=0)
    assert ate(gt + [3.0, 4.0], gt) == pytest.approx(5.0)
    assert ate(gt, gt) == 0.0
    with pytest.raises(ValueError):
        ate(gt[:5], gt)


def test_rpe_of_identical_or_shifted_trajectories_is_zero() -> None:
    rng = np.random.default_rng(0)
    gt = np.cumsum(rng.normal(size=(12, 2)), axis=0)
    assert rpe(gt, gt) == 0.0
    assert rpe(gt + [3.0, -1.0], gt) == pytest.approx(0.0, abs=1e-12)  # translation-invariant
    assert ate(gt + [3.0, -1.0], gt) > 1.0


def test_rpe_counts_one_extra_step_once() -> None:
    gt = np.stack([np.arange(10.0), np.zeros(10)], axis=1)  # 9 steps of (1, 0)
    pred = gt.copy()
    pred[5:, 0] += 0.5  # one step is 0.5 m too long; later steps are right again
    assert rpe(pred, gt) == pytest.approx(math.sqrt(0.5**2 / 9))
    assert ate(pred, gt) == pytest.approx(math.sqrt(5 * 0.5**2 / 10))
    # delta=2: the two pairs straddling the long step carry the error.
    assert rpe(pred, gt, delta=2) == pytest.approx(math.sqrt(2 * 0.5**2 / 8))
    with pytest.raises(ValueError):
        rpe(pred, gt, delta=10)


def test_rpe_with_headings_uses_local_frames() -> None:
    gt = poses_from_actions((0.0, 0.0, 0.0), np.array([[1.0, 0.0, 0.3]] * 8))
    # The same trajectory seen from another origin and orientation: relative motion is equal.
    theta, shift = 1.1, np.array([5.0, -2.0])
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    moved = np.column_stack([gt[:, :2] @ rot.T + shift, gt[:, 2] + theta])
    assert rpe(moved, gt) == pytest.approx(0.0, abs=1e-12)
    assert rpe_rotation(moved, gt) == pytest.approx(0.0, abs=1e-12)
    assert rpe(moved[:, :2], gt[:, :2]) > 0.5  # without headings the world frame is used
    turned = gt.copy()
    turned[4:, 2] += 0.1  # one extra 0.1 rad turn
    assert rpe_rotation(turned, gt) == pytest.approx(math.sqrt(0.01 / 8))
    assert rpe_rotation(turned, gt, degrees=True) == pytest.approx(math.degrees(math.sqrt(0.01 / 8)))


def test_delta_xyz_on_a_hand_example() -> None:
    planned = np.array([[0.1, 0.0, 0.0, 0.5], [0.1, 0.05, -0.02, 0.0]])
    gt = np.array([[0.05, 0.0, 0.0, 0.0], [0.05, 0.05, 0.0, 0.7]])
    # Σ planned xyz = (0.2, 0.05, -0.02); Σ gt xyz = (0.1, 0.05, 0.0); the gripper is ignored.
    assert delta_xyz(planned, gt) == pytest.approx(0.12)
    # Order does not matter: only the cumulative displacement counts.
    assert delta_xyz(planned[::-1], gt) == pytest.approx(0.12)
    assert delta_xyz(gt, gt) == 0.0


def test_poses_from_actions_integrates_camera_relative_motion() -> None:
    poses = poses_from_actions(
        (0.0, 0.0, 0.0), np.array([[1.0, 0.0, math.pi / 2], [1.0, 0.0, 0.0], [0.0, 0.5, 0.0]])
    )
    assert poses.shape == (4, 3)
    assert poses[1] == pytest.approx([1.0, 0.0, math.pi / 2])
    assert poses[2] == pytest.approx([1.0, 1.0, math.pi / 2])  # forward is now +y
    assert poses[3] == pytest.approx([0.5, 1.0, math.pi / 2])  # left is now -x
    straight = np.array([[0.4, 0.1, 0.0]] * 3)
    assert poses_from_actions((1.0, 2.0, 0.5), straight, substeps=2) == pytest.approx(
        poses_from_actions((1.0, 2.0, 0.5), straight)
    )
