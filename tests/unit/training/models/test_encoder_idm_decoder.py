"""Encoders (tiny and V-JEPA 2 from a local snapshot), IDM and decoder: shapes and frame causality."""

from pathlib import Path

import pytest
import torch

from training.config import DecoderConfig, EncoderConfig, IdmConfig, ModelConfig
from training.models import (
    FrameCausalDecoder,
    InverseDynamicsModel,
    LatentActionModel,
    TinyEncoder,
    VJepa2Encoder,
)
from training.models.idm import local_correlation

ENC = EncoderConfig(image_size=32, patch=8, dim=32, depth=2, heads=2)


def test_tiny_encoder_states_shape_and_normalisation() -> None:
    encoder = TinyEncoder(ENC).eval()
    states = encoder(torch.randint(0, 256, (2, 6, 3, 32, 32), dtype=torch.uint8))
    assert states.shape == (2, 3, 16, 32)  # [B, T/2, N, D]
    assert torch.allclose(states.mean(-1), torch.zeros(2, 3, 16), atol=1e-5)  # layer-normalised tokens


def test_tiny_encoder_is_frame_causal() -> None:
    encoder = TinyEncoder(ENC).eval()
    video = torch.rand(1, 8, 3, 32, 32)
    base = encoder(video)
    changed = video.clone()
    changed[:, 5] = torch.rand(3, 32, 32)  # frame 5 belongs to tubelet 2
    out = encoder(changed)
    assert torch.allclose(out[:, :2], base[:, :2])
    assert not torch.allclose(out[:, 2], base[:, 2])


def test_encoder_rejects_odd_frame_counts() -> None:
    with pytest.raises(ValueError, match="multiple of the tubelet size 2"):
        TinyEncoder(ENC)(torch.rand(1, 5, 3, 32, 32))


def test_uint8_and_unit_float_inputs_agree() -> None:
    encoder = TinyEncoder(ENC).eval()
    video = torch.randint(0, 256, (1, 2, 3, 32, 32), dtype=torch.uint8)
    assert torch.allclose(encoder(video), encoder(video.float() / 255), atol=1e-5)


@pytest.fixture(scope="module")
def vjepa2_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny, randomly initialised V-JEPA 2 saved like a Hugging Face snapshot (no download)."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.VJEPA2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, crop_size=32, patch_size=16, frames_per_clip=2,
        tubelet_size=2, pred_hidden_size=16, pred_num_attention_heads=2, pred_num_hidden_layers=1, num_pooler_layers=1,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vjepa2")
    transformers.VJEPA2Model(cfg).save_pretrained(path)
    return path


def test_vjepa2_encoder_loads_local_snapshot_and_is_frame_causal(vjepa2_snapshot: Path) -> None:
    cfg = EncoderConfig(source="vjepa2", vjepa2_path=str(vjepa2_snapshot), image_size=32, patch=16, dim=32)
    encoder = VJepa2Encoder(cfg)
    assert not any(p.requires_grad for p in encoder.parameters())  # frozen
    video = torch.rand(2, 6, 3, 32, 32)
    states = encoder(video)
    assert states.shape == (2, 3, 4, 32)
    changed = video.clone()
    changed[:, 4:] = torch.rand(2, 2, 3, 32, 32)
    assert torch.allclose(encoder(changed)[:, :2], states[:, :2], atol=1e-6)


def test_vjepa2_lam_builds_on_snapshot_widths(vjepa2_snapshot: Path) -> None:
    cfg = ModelConfig(
        encoder=EncoderConfig(source="vjepa2", vjepa2_path=str(vjepa2_snapshot), image_size=32, patch=16, dim=32),
        idm=IdmConfig(dim=16, depth=1, heads=2, latent_dim=8),
        decoder=DecoderConfig(dim=16, depth=1, heads=2),
    )
    model = LatentActionModel(cfg)
    assert model.saved_components() == ("idm", "regularizer", "world_model", "decoder")  # the snapshot is not copied
    out = model.lam_loss(model.encode(torch.rand(1, 6, 3, 32, 32)))
    assert out.latents.shape == (1, 2, 8)


def test_vjepa2_missing_snapshot_is_a_clear_error(tmp_path: Path) -> None:
    cfg = EncoderConfig(source="vjepa2", vjepa2_path=str(tmp_path / "nope"), image_size=32, patch=16, dim=32)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        VJepa2Encoder(cfg)


@pytest.mark.parametrize("fusion", ["tokens", "channels", "correlation"])
def test_idm_gives_one_latent_per_step_and_sees_both_states(fusion: str) -> None:
    torch.manual_seed(0)
    cfg = IdmConfig(dim=32, depth=1, heads=2, latent_dim=128, fusion=fusion)
    idm = InverseDynamicsModel(cfg, state_dim=16, grid=2, out_dim=128).eval()
    states = torch.randn(3, 5, 4, 16)
    z = idm(states)
    assert z.shape == (3, 4, 128)
    changed = states.clone()
    changed[:, 2] += 1.0  # s_2 enters pairs (1, 2) and (2, 3) only
    z2 = idm(changed)
    assert torch.allclose(z2[:, [0, 3]], z[:, [0, 3]], atol=1e-6)
    assert not torch.allclose(z2[:, 1], z[:, 1]) and not torch.allclose(z2[:, 2], z[:, 2])


def test_channel_fused_idm_gives_each_grid_cell_one_token_holding_both_states() -> None:
    torch.manual_seed(0)
    cfg = IdmConfig(dim=32, depth=1, heads=2, latent_dim=8, fusion="channels")
    idm = InverseDynamicsModel(cfg, state_dim=16, grid=2, out_dim=8).eval()
    assert idm.proj_in.in_features == 32 and not hasattr(idm, "step_embed")
    seen: list[torch.Size] = []
    idm.blocks[0].register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0].shape))
    current, following = torch.randn(3, 4, 16), torch.randn(3, 4, 16)
    z = idm.pair(current, following)
    assert z.shape == (3, 8) and seen == [torch.Size([3, 4, 32])]  # N tokens, not 2N
    assert not torch.allclose(idm.pair(following, current), z)  # the order of the pair matters


def test_local_correlation_peaks_where_each_cell_content_went() -> None:
    torch.manual_seed(0)
    grid, radius = 6, 2
    current = torch.randn(2, grid, grid, 16)
    following = torch.roll(current, shifts=(1, -1), dims=(1, 2))  # content moves one row down, one column left
    corr = local_correlation(current.reshape(2, -1, 16), following.reshape(2, -1, 16), grid, radius)
    assert corr.shape == (2, grid * grid, 25)
    peak = corr.reshape(2, grid, grid, 25)[:, 1:-1, 1:-1].argmax(-1)  # interior cells: the shift stays on the grid
    assert (peak == (radius + 1) * 5 + (radius - 1)).all()  # offset (dy, dx) = (+1, -1), row-major from (-r, -r)
    assert torch.allclose(corr.reshape(2, grid, grid, 25)[:, 1:-1, 1:-1].amax(-1), torch.ones(1), atol=1e-5)
    # beyond the grid's edge: zero similarity, not a wrapped-around cell
    assert (corr.reshape(2, grid, grid, 5, 5)[:, 0, :, 0, :] == 0).all()
    # the same content anywhere scores the same: only where it went matters
    scaled = local_correlation(3 * current.reshape(2, -1, 16), 3 * following.reshape(2, -1, 16), grid, radius)
    assert torch.allclose(scaled, corr, atol=1e-5)


def test_correlation_fused_idm_reads_the_correlation_volume() -> None:
    torch.manual_seed(0)
    cfg = IdmConfig(dim=32, depth=1, heads=2, latent_dim=8, fusion="correlation", correlation_radius=1, correlation_dim=8)
    idm = InverseDynamicsModel(cfg, state_dim=16, grid=3, out_dim=8).eval()
    assert idm.corr_in.in_features == 9 and idm.corr_features.out_features == 8
    current, following = torch.randn(2, 9, 16), torch.randn(2, 9, 16)
    z = idm.pair(current, following)
    with torch.no_grad():
        idm.corr_in.weight.zero_()
        idm.corr_in.bias.zero_()
    assert not torch.allclose(idm.pair(current, following), z)  # the volume changed the latent


def test_decoder_is_frame_causal_and_outputs_pixels() -> None:
    torch.manual_seed(0)
    decoder = FrameCausalDecoder(DecoderConfig(dim=32, depth=2, heads=2), state_dim=16, grid=2, patch=4, tubelet=2, max_steps=8).eval()
    states = torch.randn(1, 4, 4, 16)
    video = decoder(states)
    assert video.shape == (1, 8, 3, 8, 8)
    assert video.min() >= 0 and video.max() <= 1
    changed = states.clone()
    changed[:, 3] += 1
    assert torch.allclose(decoder(changed)[:, :6], video[:, :6], atol=1e-6)


def test_conv_decoder_head_is_frame_causal_and_crosses_token_borders() -> None:
    torch.manual_seed(0)
    cfg = DecoderConfig(dim=32, depth=1, heads=2, head="conv", head_channels=16)
    decoder = FrameCausalDecoder(cfg, state_dim=16, grid=2, patch=4, tubelet=2, max_steps=8).eval()
    states = torch.randn(1, 3, 4, 16, requires_grad=True)  # [B, S, N=2x2, D]
    video = decoder(states)
    assert video.shape == (1, 6, 3, 8, 8) and video.min() >= 0 and video.max() <= 1
    # frame causality: a change at step 2 leaves the frames of steps 0 and 1 alone
    changed = states.detach().clone()
    changed[:, 2] = torch.randn(4, 16)
    assert torch.allclose(decoder(changed)[:, :4], video[:, :4].detach(), atol=1e-6)
    # the pixel just left of the border between tokens (0, 0) and (0, 1) depends on both tokens:
    # the linear head would give it a gradient from token (0, 0) only (hence the block edges)
    video[0, 0, :, 1, 3].sum().backward()
    per_token = states.grad[0, 0].abs().sum(-1)  # [N]
    assert per_token[0] > 0 and per_token[1] > 0
    assert states.grad[0, 1:].abs().sum() == 0  # later steps never reach an earlier frame


def test_linear_decoder_head_is_the_default() -> None:
    assert DecoderConfig().head == "linear"  # checkpoints saved before the conv head still load
