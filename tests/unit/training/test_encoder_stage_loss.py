"""The encoder stage's loss options: the reconstruction's frame-to-frame change and windows."""

import pytest
import torch

from training.config import DecoderConfig, ModelConfig
from training.loop import encoder_stage_loss
from training.models import LatentActionModel

CFG = ModelConfig.model_validate({
    "encoder": {"image_size": 32, "patch": 8, "dim": 32, "depth": 1, "heads": 2},
    "idm": {"dim": 32, "depth": 1, "heads": 2, "latent_dim": 16},
    "world_model": {"dim": 32, "depth": 1, "heads": 2, "max_steps": 8},
    "decoder": DecoderConfig(dim=32, depth=1, heads=2).model_dump(),
})


def model() -> LatentActionModel:
    torch.manual_seed(0)
    return LatentActionModel(CFG)


def test_change_term_is_the_l1_of_frame_differences() -> None:
    video = torch.rand(2, 8, 3, 32, 32)
    m = model()
    plain, plain_stats = encoder_stage_loss(m, video)
    weighted, stats = encoder_stage_loss(m, video, change_weight=2.0)
    reconstruction = m.decoder(m.encoder(video))
    expected = (reconstruction.diff(dim=1) - video.diff(dim=1)).abs().mean()
    assert stats["change_l1"] == pytest.approx(expected.item(), rel=1e-5)
    assert weighted.item() == pytest.approx(plain.item() + 2.0 * expected.item(), rel=1e-5)
    assert "change_l1" not in plain_stats


def test_window_autoencodes_each_window_on_its_own() -> None:
    video = torch.rand(2, 8, 3, 32, 32)
    m = model()
    windowed, _ = encoder_stage_loss(m, video, window=2)
    # one tubelet per window: the same as autoencoding the clips cut into single tubelets
    cut, _ = encoder_stage_loss(m, video.reshape(8, 2, 3, 32, 32))
    assert windowed.item() == pytest.approx(cut.item(), rel=1e-6)
    whole, _ = encoder_stage_loss(m, video)
    assert windowed.item() != pytest.approx(whole.item(), rel=1e-6)  # the decoder saw no earlier tubelets


@pytest.mark.parametrize("window", [3, 6])
def test_window_must_fit_the_tubelet_and_the_clip(window: int) -> None:
    with pytest.raises(ValueError, match="multiple of the tubelet and divide"):
        encoder_stage_loss(model(), torch.rand(1, 8, 3, 32, 32), window=window)
