"""Tests for the 3D ResNet backbone (SPEC "Backbone: 3D ResNet"; Hara et al., CVPR 2018)."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidkd.models import ResNet3D, resnet3d
from vidkd.models.resnet3d import (
    DEPTHS,
    BasicBlock,
    Bottleneck,
    ZeroPadShortcut,
    load_hara_state_dict,
)

TINY = 1 / 16  # stage widths 4/8/16/32
TINY_CLIPS = (2, 3, 4, 32, 32)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("depth", "shortcut", "num_classes", "expected"),
    [
        (18, "A", 400, 33_235_280),
        (34, "A", 400, 63_544_912),
        (50, "B", 400, 47_018_576),
        (101, "B", 400, 86_064_720),
        (18, "B", 400, 33_409_104),
        (18, "A", 101, 33_081_893),
        (50, "B", 101, 46_405_925),
    ],
)
def test_parameter_counts_match_hara(
    depth: int, shortcut: str, num_classes: int, expected: int
) -> None:
    model = resnet3d(depth, num_classes, shortcut=shortcut)
    assert count_parameters(model) == expected


def test_feature_map_sizes_for_16x112x112_clip() -> None:
    torch.manual_seed(0)
    model = resnet3d(18, 400).eval()
    names = ["relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    shapes: dict[str, tuple[int, ...]] = {}

    def record_shape(name: str):
        def hook(_module: nn.Module, _inputs: tuple[Tensor, ...], output: Tensor) -> None:
            shapes[name] = tuple(output.shape[1:])

        return hook

    for name in names:
        model.get_submodule(name).register_forward_hook(record_shape(name))
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 16, 112, 112))
    assert shapes == {
        "relu": (64, 16, 56, 56),
        "maxpool": (64, 8, 28, 28),
        "layer1": (64, 8, 28, 28),
        "layer2": (128, 4, 14, 14),
        "layer3": (256, 2, 7, 7),
        "layer4": (512, 1, 4, 4),
    }
    assert logits.shape == (1, 400)


@pytest.mark.parametrize("depth", sorted(DEPTHS))
@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_tiny_networks_every_depth(depth: int, shortcut: str) -> None:
    torch.manual_seed(0)
    model = resnet3d(depth, 7, shortcut=shortcut, width_multiplier=TINY)
    expansion = DEPTHS[depth][0].expansion
    assert model.feature_dim == 32 * expansion
    clips = torch.randn(*TINY_CLIPS)
    logits = model(clips)
    assert logits.shape == (2, 7)
    features = model.forward_features(clips)
    assert features.shape == (2, model.feature_dim)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model.fc(model.forward_features(clips)), model(clips))


def test_full_width_feature_dims() -> None:
    assert resnet3d(18, 10).feature_dim == 512
    assert resnet3d(50, 10).feature_dim == 2048


def test_no_max_pool_changes_layer1_size() -> None:
    sizes = {}
    for no_max_pool in (False, True):
        model = resnet3d(18, 5, no_max_pool=no_max_pool, width_multiplier=TINY)
        out = model.layer1(
            model.maxpool(model.relu(model.bn1(model.conv1(torch.randn(*TINY_CLIPS)))))
        )
        sizes[no_max_pool] = tuple(out.shape[1:])
        assert model(torch.randn(*TINY_CLIPS)).shape == (2, 5)
    assert sizes[False] == (4, 2, 8, 8)
    assert sizes[True] == (4, 4, 16, 16)
    assert not any(isinstance(m, nn.MaxPool3d) for m in resnet3d(10, 5, no_max_pool=True).modules())


@pytest.mark.parametrize(("t_size", "t_stride", "t_out"), [(7, 1, 4), (3, 1, 4), (3, 2, 2), (4, 1, 5)])
def test_stem_temporal_kernel_and_stride_follow_hara(t_size: int, t_stride: int, t_out: int) -> None:
    """Hara's conv1_t_size / conv1_t_stride: kernel (t, 7, 7), stride (s, 2, 2), padding
    (t // 2, 3, 3); 4 frames give (4 + 2 (t // 2) - t) // s + 1 frames after the stem."""
    torch.manual_seed(0)
    model = resnet3d(10, 5, width_multiplier=TINY, conv1_t_size=t_size, conv1_t_stride=t_stride)
    assert model.conv1.weight.shape == (4, 3, t_size, 7, 7)
    clips = torch.randn(*TINY_CLIPS)
    with torch.no_grad():
        stem = model.conv1(clips)
        expected = F.conv3d(clips, model.conv1.weight, stride=(t_stride, 2, 2),
                            padding=(t_size // 2, 3, 3))
        torch.testing.assert_close(stem, expected)
        assert stem.shape == (2, 4, t_out, 16, 16)
        assert model(clips).shape == (2, 5)


def test_stem_temporal_kernel_changes_only_conv1_parameters() -> None:
    """A 3x7x7 stem has 64 * 3 * (7 - 3) * 7 * 7 fewer weights than Hara's 7x7x7 one."""
    hara = count_parameters(resnet3d(18, 400))
    assert count_parameters(resnet3d(18, 400, conv1_t_size=3)) == hara - 64 * 3 * 4 * 49


@pytest.mark.parametrize("bad", [{"conv1_t_size": 0}, {"conv1_t_stride": 0}])
def test_stem_temporal_settings_below_one_are_refused(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="conv1_t_size and conv1_t_stride"):
        resnet3d(10, 5, width_multiplier=TINY, **bad)


def test_shortcut_a_is_parameter_free() -> None:
    model_a = resnet3d(18, 10, shortcut="A", width_multiplier=TINY)
    model_b = resnet3d(18, 10, shortcut="B", width_multiplier=TINY)
    assert isinstance(model_a.layer2[0].downsample, ZeroPadShortcut)
    assert model_a.layer1[0].downsample is None
    assert not any("downsample" in key for key in model_a.state_dict())
    assert any("downsample" in key for key in model_b.state_dict())
    # Bottleneck layer1 widens 64 -> 256 at stride 1: type A pads without subsampling.
    bottleneck_a = resnet3d(50, 10, shortcut="A", width_multiplier=TINY)
    assert bottleneck_a.layer1[0].downsample.stride == 1


def manual_zero_pad_subsample(x: Tensor, out_planes: int, stride: int) -> Tensor:
    sub = x[:, :, ::stride, ::stride, ::stride]
    pad = torch.zeros(sub.shape[0], out_planes - sub.shape[1], *sub.shape[2:])
    return torch.cat([sub, pad], dim=1)


def test_shortcut_a_forward_equals_manual_zero_pad_subsample() -> None:
    torch.manual_seed(0)
    model = resnet3d(18, 10, shortcut="A", width_multiplier=TINY).eval()
    block = model.layer2[0]
    x = torch.randn(2, 4, 4, 8, 8).relu()
    expected_identity = manual_zero_pad_subsample(x, 8, 2)
    assert torch.equal(block.downsample(x), expected_identity)
    assert expected_identity[:, 4:].abs().sum() == 0
    with torch.no_grad():
        residual = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))
        expected = (residual + expected_identity).relu()
        assert torch.allclose(block(x), expected, atol=1e-6)


def test_shortcut_a_gradient_flows_through_identity() -> None:
    """Hara's code pads ``out.data`` and so gives this input zero gradient; ours must not."""
    model = resnet3d(18, 10, shortcut="A", width_multiplier=TINY).train()
    block = model.layer2[0]
    with torch.no_grad():
        block.conv1.weight.zero_()
        block.conv2.weight.zero_()
    x = (torch.rand(2, 4, 4, 8, 8) + 0.1).requires_grad_()
    block(x).sum().backward()
    # The residual branch has zero weights, so all gradient comes from the identity path:
    # 1 at the kept (subsampled) positions, 0 at the skipped ones.
    expected = torch.zeros_like(x)
    expected[:, :, ::2, ::2, ::2] = 1.0
    assert torch.equal(x.grad, expected)


def test_shortcut_a_gradient_reaches_network_input() -> None:
    torch.manual_seed(0)
    model = resnet3d(10, 3, shortcut="A", width_multiplier=TINY)
    clips = torch.randn(*TINY_CLIPS, requires_grad=True)
    model(clips).sum().backward()
    assert clips.grad is not None and clips.grad.abs().sum() > 0


def test_hara_state_dict_names() -> None:
    keys = set(resnet3d(18, 10, shortcut="B", width_multiplier=TINY).state_dict())
    for key in [
        "conv1.weight",
        "bn1.weight",
        "bn1.running_mean",
        "layer1.0.conv1.weight",
        "layer1.0.bn1.running_var",
        "layer1.1.conv2.weight",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.running_mean",
        "layer4.1.bn2.bias",
        "fc.weight",
        "fc.bias",
    ]:
        assert key in keys
    keys_50 = set(resnet3d(50, 10, width_multiplier=TINY).state_dict())
    assert {
        "layer1.0.conv3.weight",
        "layer1.0.bn3.weight",
        "layer1.0.downsample.0.weight",
    } <= keys_50
    # dropout adds no parameters, so names stay Hara's.
    assert set(resnet3d(18, 10, width_multiplier=TINY, dropout=0.5).state_dict()) == keys


def test_load_hara_state_dict_strips_module_prefix() -> None:
    torch.manual_seed(0)
    source = resnet3d(18, 10, width_multiplier=TINY)
    with torch.no_grad():
        source.bn1.running_mean.uniform_()
    hara_checkpoint = {f"module.{k}": v.clone() for k, v in source.state_dict().items()}
    torch.manual_seed(1)
    target = resnet3d(18, 10, width_multiplier=TINY)
    assert not torch.equal(target.conv1.weight, source.conv1.weight)
    assert load_hara_state_dict(target, hara_checkpoint) is target
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    # Unprefixed dicts load too; strict loading rejects a mismatched architecture.
    load_hara_state_dict(target, source.state_dict())
    with pytest.raises(RuntimeError):
        load_hara_state_dict(resnet3d(10, 10, width_multiplier=TINY), hara_checkpoint)


def test_channels_last_3d_matches_contiguous() -> None:
    torch.manual_seed(0)
    model = resnet3d(18, 6, shortcut="A", width_multiplier=TINY).eval()
    clips = torch.randn(*TINY_CLIPS)
    with torch.no_grad():
        expected = model(clips)
        model = model.to(memory_format=torch.channels_last_3d)
        got = model(clips.to(memory_format=torch.channels_last_3d))
    assert torch.allclose(got, expected, atol=1e-5)


def test_init_follows_hara() -> None:
    model = resnet3d(18, 10, width_multiplier=TINY)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm3d):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
    # kaiming fan_out: std = sqrt(2 / (out_channels * k^3)); conv1 fan_out = 64 * 343.
    torch.manual_seed(0)
    weight = resnet3d(18, 10).conv1.weight
    assert weight.std().item() == pytest.approx((2 / (64 * 343)) ** 0.5, rel=0.02)


def test_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    model = resnet3d(10, 4, width_multiplier=TINY, dropout=0.5)
    clips = torch.randn(*TINY_CLIPS)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(clips), model.fc(model.forward_features(clips)))


def test_dropout_active_in_training() -> None:
    """Training mode zeroes about half the pooled features (p = 0.5) and doubles the rest."""
    torch.manual_seed(0)
    model = resnet3d(10, 4, width_multiplier=TINY, dropout=0.5).train()
    seen = {}
    model.dropout.register_forward_hook(lambda m, i, o: seen.update(features=i[0], dropped=o))
    model(torch.randn(8, 3, 4, 32, 32))
    features, dropped = seen["features"], seen["dropped"]
    kept = dropped != 0
    assert 0.3 < 1 - kept[features != 0].float().mean().item() < 0.7
    assert torch.allclose(dropped[kept], 2 * features[kept])


def test_constructor_injects_block_and_in_channels() -> None:
    model = ResNet3D(Bottleneck, [1, 1, 1, 1], 3, width_multiplier=TINY, in_channels=1)
    assert model.feature_dim == 128
    assert model(torch.randn(2, 1, 4, 32, 32)).shape == (2, 3)
    assert isinstance(resnet3d(34, 3, width_multiplier=TINY).layer3[5], BasicBlock)
    assert len(resnet3d(152, 3, width_multiplier=TINY).layer3) == 36


def test_width_multiplier_rounds_with_minimum_one() -> None:
    model = resnet3d(10, 2, width_multiplier=1 / 1000)
    assert model.conv1.out_channels == 1
    assert model.feature_dim == 1
    assert model(torch.randn(2, 3, 4, 16, 16)).shape == (2, 2)
    assert resnet3d(18, 2, width_multiplier=0.3).layer2[0].conv1.out_channels == 38  # round(38.4)


def test_invalid_depth_and_shortcut_raise() -> None:
    with pytest.raises(ValueError, match="10, 18, 34, 50, 101, 152"):
        resnet3d(17, 10)
    with pytest.raises(ValueError, match="'A', 'B'"):
        resnet3d(18, 10, shortcut="C")
    with pytest.raises(ValueError, match="'A', 'B'"):
        ResNet3D(BasicBlock, [1, 1, 1, 1], 10, shortcut="C")


def test_zero_pad_shortcut_matches_hara_forward() -> None:
    """Hara's `_downsample_basic_block`: avg_pool3d(kernel 1, stride s) then cat zeros."""
    x = torch.randn(1, 3, 5, 7, 7)
    hara = F.avg_pool3d(x, kernel_size=1, stride=2)
    hara = torch.cat([hara, torch.zeros(1, 3, *hara.shape[2:])], dim=1)
    assert torch.equal(ZeroPadShortcut(6, 2)(x), hara)


@pytest.mark.parametrize(("t_size", "t_stride", "side"), [(7, 1, 32), (3, 2, 32), (4, 2, 33)])
def test_cpu_training_stem_runs_in_slices_with_the_same_result(
    monkeypatch: pytest.MonkeyPatch, t_size: int, t_stride: int, side: int
) -> None:
    """While training on a CPU the stem conv runs a slice of the batch at a time, sized by its
    output; logits, loss and every gradient equal one call on the whole batch. (4, 2) on
    4 x 33 x 33 clips gives 3 x 17 x 17, where T // s or ceil(T / s) and H // 2 are wrong."""
    module = importlib.import_module("vidkd.models.resnet3d")  # the package exports a resnet3d()
    torch.manual_seed(0)
    model = resnet3d(10, 5, width_multiplier=TINY, conv1_t_size=t_size, conv1_t_stride=t_stride)
    clips, labels = torch.randn(5, 3, 4, side, side), torch.tensor([0, 1, 2, 3, 4])
    # stem output of one clip: 4 channels x T' x H' x W' (kernel (t, 7, 7), padding (t // 2, 3, 3))
    t_out = (4 + 2 * (t_size // 2) - t_size) // t_stride + 1
    h_out = (side + 2 * 3 - 7) // 2 + 1
    per_clip = 4 * t_out * h_out * h_out
    assert model.conv1(clips[:1]).numel() == per_clip
    calls: list[int] = []
    model.conv1.register_forward_hook(lambda _m, args, _out: calls.append(args[0].shape[0]))

    def step(limit: int) -> tuple[Tensor, list[Tensor]]:
        monkeypatch.setattr(module, "STEM_CHUNK_ELEMENTS", limit)
        model.zero_grad()
        logits = model(clips)
        F.cross_entropy(logits, labels).backward()
        return logits.detach(), [p.grad.clone() for p in model.parameters()]

    whole_logits, whole_grads = step(10**9)
    assert calls == [5]
    calls.clear()
    sliced_logits, sliced_grads = step(2 * per_clip + per_clip // 2)  # room for 2 clips a call
    assert calls == [2, 2, 1]
    torch.testing.assert_close(sliced_logits, whole_logits)
    for sliced, whole in zip(sliced_grads, whole_grads, strict=True):
        torch.testing.assert_close(sliced, whole)
    # evaluation and no_grad: one call, whatever the limit
    calls.clear()
    model.eval()
    model(clips)
    model.train()
    with torch.no_grad():
        model(clips)
    # a frozen stem (no weight gradient to split) is one call too
    model.conv1.weight.requires_grad_(False)
    model(clips)
    assert calls == [5, 5, 5]
