"""Environments with real actions, for controller training and offline planning evaluation.

* :class:`NavigationEnv` — a camera moving over a photo-textured ground plane; actions
  (forward, lateral, yaw) in the camera frame; scored with ATE/RPE as in RECON/NWM.
* :class:`ManipulationEnv` — an end effector pushing and carrying blocks on a table seen by a
  fixed camera; actions (dx, dy, dz, gripper); scored with Δxyz as in the DROID protocol.
* :mod:`training.envs.episodes` records episodes under a scripted smooth random policy and
  writes/loads them (MP4 + JSONL + NPZ); :mod:`training.envs.metrics` holds the metrics.
"""

from training.envs.episodes import Episode, load_episodes, make_env, record_episode, write_episodes
from training.envs.manipulation import ManipulationEnv
from training.envs.metrics import ate, delta_xyz, poses_from_actions, rpe, rpe_rotation
from training.envs.navigation import NavigationEnv

__all__ = [
    "Episode",
    "ManipulationEnv",
    "NavigationEnv",
    "ate",
    "delta_xyz",
    "load_episodes",
    "make_env",
    "poses_from_actions",
    "record_episode",
    "rpe",
    "rpe_rotation",
    "write_episodes",
]
