"""Controller training on recorded episodes, against a tiny frozen LAM."""

import torch

from tests.conftest import tiny_config_dict
from training.config import config_from_dict
from training.controller_training import ControllerTraining, duplicate_frames, labelled_set, train_controller
from training.envs.episodes import record_episode
from training.models import LatentActionModel
from training.models.controller import ControllerConfig


def test_duplicated_frames_make_one_state_per_observation() -> None:
    frames = torch.randint(0, 255, (3, 8, 8, 3), dtype=torch.uint8).numpy()
    video = duplicate_frames(frames)
    assert video.shape == (6, 3, 8, 8)
    assert torch.equal(video[0], video[1]) and torch.equal(video[4], video[5])
    assert torch.equal(video[2].permute(1, 2, 0), torch.from_numpy(frames[1]))


def test_controller_learns_the_idm_latents_of_real_actions() -> None:
    torch.manual_seed(0)
    model = LatentActionModel(config_from_dict(tiny_config_dict("unused", ["unused"])).model).eval()
    episodes = [record_episode("navigation", seed, steps=6, image_size=32) for seed in range(4)]
    data = labelled_set(model, episodes)
    assert data.actions.shape == (4, 6, 3) and data.latents.shape == (4, 6, 16) and data.states.shape[1] == 7
    controller, metrics = train_controller(
        model, data, ControllerConfig(action_dim=3, dim=32, heads=2), ControllerTraining(steps=60, batch=8)
    )
    assert metrics["transitions"] == 24
    assert metrics["final_l2"] < 0.5 * metrics["first_l2"]


def test_action_labelled_world_model_learns_from_true_actions() -> None:
    from training.action_world_model import ActionWorldModelTraining, action_step, train_action_world_model

    torch.manual_seed(0)
    model = LatentActionModel(config_from_dict(tiny_config_dict("unused", ["unused"])).model).eval()
    data = labelled_set(model, [record_episode("manipulation", seed, steps=5, image_size=32) for seed in range(3)])
    wm, metrics = train_action_world_model(model, data, ActionWorldModelTraining(steps=40, batch=3))
    assert metrics["final_l1"] < metrics["first_l1"]
    nxt = action_step(wm)(data.states[:, 0], data.actions[:, 0])
    assert nxt.shape == data.states[:, 1].shape
