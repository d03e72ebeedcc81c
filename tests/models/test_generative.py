"""Attention module, attended map, CVAE and AttentionResNet3D of generative feature KD
(SPEC "Methods" 7), and rebuilding any student from its file's description."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vidkd.models import (
    AttentionResNet3D,
    ChannelTimeAttention,
    ConditionalVAE,
    attended_features,
    build_from_description,
    resnet3d,
)

TINY = 0.125


def plain_description(depth: int = 10, num_classes: int = 5) -> dict:
    return {"depth": depth, "num_classes": num_classes, "shortcut": "B", "no_max_pool": False,
            "width_multiplier": TINY}


# ---- attention A in (0, 1), shape C x T ---------------------------------------------------

@pytest.mark.parametrize("scale", [1.0, 1e3, 1e6])
def test_attention_is_strictly_inside_0_1_with_channel_x_time_shape(scale: float) -> None:
    torch.manual_seed(0)
    module = ChannelTimeAttention(16)
    features = torch.relu(torch.randn(3, 16, 5, 3, 4)) * scale
    attention = module(features)
    assert attention.shape == (3, 16, 5)
    assert bool((attention > 0).all()) and bool((attention < 1).all())
    # saturation is real at large scales: without the floor some values would hit 0 or 1
    if scale == 1e6:
        per_step = module.relu(module.spatial(features)).mean(dim=(3, 4))
        raw = torch.sigmoid(module.temporal(per_step))
        assert bool(((raw == 0) | (raw == 1)).any())


def test_attention_uses_space_per_time_step_and_time_across_steps() -> None:
    """Changing one time step of F changes A at that step and its temporal neighbours only
    (temporal kernel 3), and A does not depend on where in H x W a constant map sits."""
    torch.manual_seed(0)
    module = ChannelTimeAttention(8)
    features = torch.rand(1, 8, 6, 4, 4)
    changed = features.clone()
    changed[:, :, 0] += 1.0
    a, b = module(features), module(changed)
    moved = (a - b).abs().amax(dim=1)[0]
    assert moved[0] > 0 and moved[1] > 0
    assert torch.equal(moved[2:], torch.zeros(4))


# ---- F * A rescaled to keep the sum of F --------------------------------------------------

def test_attended_map_keeps_each_samples_sum_and_matches_the_formula() -> None:
    torch.manual_seed(0)
    features = torch.rand(3, 4, 2, 3, 3, dtype=torch.float64)
    features[1] *= 10.0  # samples of different scales: the rescale is per sample
    attention = torch.rand(3, 4, 2, dtype=torch.float64) * 0.9 + 0.05
    out = attended_features(features, attention)
    for n in range(3):
        f = features[n].flatten().tolist()
        weights = [attention[n, c, t].item() for c in range(4) for t in range(2) for _ in range(9)]
        weighted = [fi * wi for fi, wi in zip(f, weights, strict=True)]
        factor = sum(f) / sum(weighted)
        expected = [x * factor for x in weighted]
        assert out[n].flatten().tolist() == pytest.approx(expected, rel=1e-12)
        assert out[n].sum().item() == pytest.approx(sum(f), rel=1e-12)
    # a batch-wide rescale (the authors' code) would not keep each sample's sum
    batch_wide = features * attention[..., None, None]
    batch_wide = batch_wide * features.sum() / batch_wide.sum()
    assert abs(batch_wide[1].sum().item() - features[1].sum().item()) > 1e-3


def test_attended_map_of_a_zero_map_is_zero_and_finite() -> None:
    features = torch.zeros(2, 3, 1, 2, 2)
    features[1, 0, 0, 0, 0] = 1e-30  # below the eps floor
    out = attended_features(features, torch.full((2, 3, 1), 0.5))
    assert bool(torch.isfinite(out).all())
    assert torch.equal(out[0], torch.zeros(3, 1, 2, 2))
    assert out[1].sum().item() <= 1e-30


# ---- CVAE shapes: latent laid out like A (C x T) -----------------------------------------

def test_cvae_latent_is_c_by_t_and_reconstruction_has_the_map_shape() -> None:
    torch.manual_seed(0)
    cvae = ConditionalVAE(8)
    features = torch.rand(2, 8, 3, 4, 5)
    attention = torch.rand(2, 8, 3)
    noise = torch.randn(2, 8, 3)
    reconstruction, mean, log_var = cvae(features, attention, noise)
    assert mean.shape == log_var.shape == attention.shape == (2, 8, 3)
    assert reconstruction.shape == features.shape
    # reparameterisation: F-hat = decode(mu + eps * sigma, A)
    latent = mean + noise * torch.exp(0.5 * log_var)
    torch.testing.assert_close(reconstruction, cvae.decoder(latent, attention, (4, 5)))
    # the decoder is conditioned on A: another attention, another reconstruction
    assert not torch.allclose(cvae.decoder(latent, attention * 0.5, (4, 5)), reconstruction)


# ---- AttentionResNet3D ----------------------------------------------------------------------

def test_attention_network_forward_is_encoder_attention_pool_fc() -> None:
    torch.manual_seed(0)
    encoder = resnet3d(10, 5, width_multiplier=TINY)
    network = AttentionResNet3D(encoder, 5, cvae=True).eval()
    clips = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        features = encoder.forward_map(clips)
        attention = network.attention(features)
        weighted = features * attention[..., None, None]
        scale = features.sum(dim=(1, 2, 3, 4)) / weighted.sum(dim=(1, 2, 3, 4))
        pooled = (weighted * scale[:, None, None, None, None]).mean(dim=(2, 3, 4))
        torch.testing.assert_close(network(clips), network.fc(pooled))
    assert isinstance(network.adapter, nn.Identity) and network.channels == encoder.feature_dim
    assert network.fc.in_features == encoder.feature_dim and network.num_classes == 5


def test_adapter_lifts_the_encoder_to_the_requested_width() -> None:
    encoder = resnet3d(10, 5, width_multiplier=TINY)
    network = AttentionResNet3D(encoder, 5, channels=4 * encoder.feature_dim)
    conv = network.adapter[0]
    assert isinstance(conv, nn.Conv3d) and conv.kernel_size == (1, 1, 1)
    assert (conv.in_channels, conv.out_channels) == (encoder.feature_dim, 4 * encoder.feature_dim)
    features = network.feature_map(torch.randn(2, 3, 4, 32, 32))
    assert features.shape[1] == 4 * encoder.feature_dim and bool((features >= 0).all())
    assert network.fc.in_features == 4 * encoder.feature_dim


def test_resnet3d_forward_map_leaves_forward_and_names_unchanged() -> None:
    torch.manual_seed(0)
    model = resnet3d(10, 5, width_multiplier=TINY).eval()
    clips = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        feature_map = model.forward_map(clips)
        assert feature_map.shape == (2, model.feature_dim, 1, 1, 1)
        torch.testing.assert_close(model(clips), model.fc(feature_map.mean(dim=(2, 3, 4))))


# ---- rebuild from a description -----------------------------------------------------------

def test_plain_description_rebuilds_a_plain_resnet() -> None:
    model = build_from_description(plain_description())
    reference = resnet3d(10, 5, width_multiplier=TINY)
    assert type(model) is type(reference)
    assert model.state_dict().keys() == reference.state_dict().keys()


def test_description_rebuilds_the_stem_and_files_without_it_get_haras() -> None:
    torch.manual_seed(0)
    original = resnet3d(10, 5, width_multiplier=TINY, conv1_t_size=3, conv1_t_stride=2).eval()
    rebuilt = build_from_description(
        {**plain_description(), "conv1_t_size": 3, "conv1_t_stride": 2}
    ).eval()
    rebuilt.load_state_dict(original.state_dict())  # strict: the (4, 3, 3, 7, 7) stem fits
    clips = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(clips), original(clips))
    older = build_from_description(plain_description())  # a file written before the option
    assert older.conv1.kernel_size == (7, 7, 7) and older.conv1.stride == (1, 2, 2)


@pytest.mark.parametrize(("cvae", "factor"), [(True, 1), (False, 4)])
def test_attention_description_rebuilds_the_same_network(cvae: bool, factor: int) -> None:
    torch.manual_seed(0)
    encoder = resnet3d(10, 5, width_multiplier=TINY)
    original = AttentionResNet3D(encoder, 5, channels=factor * encoder.feature_dim, cvae=cvae)
    description = {**plain_description(), **original.description()}
    assert description["architecture"] == "attention_resnet3d"
    rebuilt = build_from_description(description)
    assert isinstance(rebuilt, AttentionResNet3D)
    rebuilt.load_state_dict(original.state_dict())  # strict: same names and shapes
    assert (rebuilt.cvae is not None) == cvae
    original.eval()
    rebuilt.eval()
    clips = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(clips), original(clips))


def test_unknown_architecture_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown architecture"):
        build_from_description({**plain_description(), "architecture": "transformer"})


def test_parameter_count_of_the_cvae_matches_its_layers() -> None:
    """Encoder MLP 2C -> C -> C -> 2C, decoder 2C -> C -> C -> C (1x1 convs with bias), two
    depthwise 1x3x3 convs with bias: a count by hand for C = 8."""
    c = 8

    def mlp(dims: list[int]) -> int:
        return sum(i * o + o for i, o in zip(dims, dims[1:], strict=False))

    expected = mlp([2 * c, c, c, 2 * c]) + mlp([2 * c, c, c, c]) + 2 * (c * 9 + c)
    assert sum(p.numel() for p in ConditionalVAE(c).parameters()) == expected
