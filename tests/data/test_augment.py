"""Tests for the SKD-SRL clip augmentation set (SPEC "Data protocol")."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vidkd.data.augment import OPERATORS, AugmentConfig, ClipAugment, flip_only
from vidkd.errors import VidkdError

ALL_ON = AugmentConfig(invert=True, noise=True)
ALWAYS = AugmentConfig(p=1.0)  # the six default operators fire on every clip


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _clips(n: int = 4, t: int = 5, h: int = 12, w: int = 14, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, t, h, w, generator=_gen(seed)) * 2 - 1


def _fires(n: int, **values: torch.Tensor | list) -> dict[str, torch.Tensor]:
    """Hand-made params: masks for the named operators (True unless given) plus values."""
    params: dict[str, torch.Tensor] = {}
    for key, value in values.items():
        params[key] = torch.as_tensor(value)
        for op, value_keys in OPERATORS.items():
            if key in value_keys and op not in values:
                params[op] = torch.ones(n, dtype=torch.bool)
    return params


# ---- shape, dtype, range, purity -------------------------------------------------------


@pytest.mark.parametrize("config", [AugmentConfig(), ALWAYS, ALL_ON, flip_only()])
def test_shape_dtype_range_and_input_untouched(config: AugmentConfig) -> None:
    clips = _clips(n=6)
    clips[0, :, 0] = 1.0  # saturated values must stay in range
    before = clips.clone()
    out = ClipAugment(config)(clips, generator=_gen(1))
    assert out.shape == clips.shape and out.dtype == clips.dtype
    assert out.min() >= -1.0 and out.max() <= 1.0
    assert torch.equal(clips, before)


def test_no_parameters_no_buffers() -> None:
    aug = ClipAugment()
    assert list(aug.parameters()) == [] and list(aug.buffers()) == []
    assert aug.state_dict() == {}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_matches_float32(dtype: torch.dtype) -> None:
    aug = ClipAugment(ALWAYS)
    clips = _clips()
    params = aug.sample_params(clips.shape[0], clips.device, _gen(2))
    reference = aug.apply(clips, params)
    with torch.no_grad():
        out = aug.apply(clips.to(dtype), params)
    assert out.dtype == dtype
    assert out.float().min() >= -1.0 and out.float().max() <= 1.0
    # Values near a hue sextant edge may move a little more; the bulk must agree.
    error = (out.float() - reference).abs()
    assert error.median() < 0.01 and error.max() < 0.2


def test_rejects_bad_shapes_and_unknown_params() -> None:
    aug = ClipAugment()
    with pytest.raises(ValueError):
        aug(torch.zeros(2, 1, 4, 8, 8))
    with pytest.raises(ValueError):
        aug(torch.zeros(3, 4, 8, 8))
    with pytest.raises(ValueError, match="unknown"):
        aug.apply(_clips(n=2), {"flipp": torch.ones(2, dtype=torch.bool)})


def test_config_validation() -> None:
    with pytest.raises(VidkdError):
        AugmentConfig(p=1.5)
    with pytest.raises(VidkdError):
        AugmentConfig(blur_kernel=6)
    with pytest.raises(VidkdError):
        AugmentConfig(blur_sigma_range=(0.0, 1.0))
    with pytest.raises(VidkdError):
        AugmentConfig(contrast_range=(1.5, 0.5))


# ---- per-clip parameters: shared by frames, different across clips -----------------------


@pytest.mark.parametrize("seed", range(3))
def test_identical_frames_stay_identical(seed: int) -> None:
    frame = torch.rand(4, 3, 1, 16, 16, generator=_gen(seed)) * 2 - 1
    clips = frame.expand(-1, -1, 6, -1, -1).contiguous()
    for config in (ALWAYS, AugmentConfig()):
        out = ClipAugment(config)(clips, generator=_gen(seed + 10))
        torch.testing.assert_close(out, out[:, :, :1].expand_as(out), rtol=0, atol=1e-6)


@pytest.mark.parametrize("op", [op for op in OPERATORS if op != "noise"])  # noise is per pixel
def test_every_frame_gets_the_same_parameters(op: str) -> None:
    """Frames that differ: each frame's output equals the op applied to that frame alone."""
    aug = ClipAugment(AugmentConfig(p=1.0, invert=True))
    clips = _clips(n=3, t=4)
    drawn = aug.sample_params(3, "cpu", _gen(3))
    params = {key: drawn[key] for key in (op, *OPERATORS[op])}
    out = aug.apply(clips, params)
    for t in range(clips.shape[2]):
        single = aug.apply(clips[:, :, t : t + 1].contiguous(), params)
        torch.testing.assert_close(out[:, :, t : t + 1], single, rtol=0, atol=1e-6)


def test_noise_is_per_pixel_but_reproducible_from_params() -> None:
    aug = ClipAugment(AugmentConfig(p=1.0, noise=True))
    clips = torch.zeros(2, 3, 4, 10, 10)
    params = aug.sample_params(2, "cpu", _gen(4))
    params = {"noise": params["noise"], "noise_seed": params["noise_seed"]}
    first, second = aug.apply(clips, params), aug.apply(clips, params)
    assert torch.equal(first, second)
    assert not torch.equal(first[:, :, 0], first[:, :, 1])
    assert abs(first.std().item() - 0.1) < 0.01


def test_identical_clips_get_different_draws() -> None:
    clip = torch.rand(1, 3, 4, 16, 16, generator=_gen(5)) * 2 - 1
    clips = clip.expand(8, -1, -1, -1, -1).contiguous()
    out = ClipAugment(ALWAYS)(clips, generator=_gen(6))
    flat = out.flatten(1)
    distance = torch.cdist(flat, flat)
    off_diagonal = distance[~torch.eye(8, dtype=torch.bool)]
    assert off_diagonal.min() > 1e-3  # every pair of clips differs
    default_out = ClipAugment()(clips, generator=_gen(7)).flatten(1)
    assert torch.unique(default_out, dim=0).shape[0] >= 4


# ---- sampling statistics -------------------------------------------------------------------


def test_firing_probability_and_parameter_ranges() -> None:
    n = 4000
    cfg = ALL_ON
    params = ClipAugment(cfg).sample_params(n, "cpu", _gen(8))
    assert set(params) == {k for op in OPERATORS for k in (op, *OPERATORS[op])}
    for op in OPERATORS:
        assert params[op].dtype == torch.bool and params[op].shape == (n,)
        assert abs(params[op].float().mean().item() - 0.5) < 0.03, op
    ranges = {
        "contrast_factor": cfg.contrast_range,
        "brightness_offset": cfg.brightness_range,
        "hue_shift": cfg.hue_range,
        "blur_sigma": cfg.blur_sigma_range,
    }
    for key, (low, high) in ranges.items():
        values = params[key]
        assert values.shape == (n,) and values.dtype == torch.float32
        assert values.min() >= low and values.max() <= high, key
        span = high - low
        assert values.min() < low + 0.01 * span and values.max() > high - 0.01 * span, key
        assert abs(values.mean().item() - (low + high) / 2) < 0.03 * span, key
    target, source = params["split_target"], params["split_source"]
    assert (target != source).all()
    assert target.min() >= 0 and target.max() <= 2 and source.min() >= 0 and source.max() <= 2
    for channels in (target, source):
        frequencies = torch.bincount(channels, minlength=3).float() / n
        assert torch.allclose(frequencies, torch.full((3,), 1 / 3), atol=0.03)
    pairs = torch.bincount(target * 3 + source, minlength=9).float() / n
    assert torch.allclose(pairs[[1, 2, 3, 5, 6, 7]], torch.full((6,), 1 / 6), atol=0.03)


def test_p_zero_is_identity_and_p_one_always_fires() -> None:
    clips = _clips()
    assert torch.equal(ClipAugment(AugmentConfig(p=0.0))(clips, _gen(9)), clips)
    params = ClipAugment(AugmentConfig(p=1.0)).sample_params(100, "cpu", _gen(9))
    assert all(params[op].all() for op in AugmentConfig().enabled())


def test_disabled_operators_have_no_params() -> None:
    default = ClipAugment().sample_params(5, "cpu", _gen(10))
    assert "invert" not in default and "noise" not in default
    assert set(ClipAugment(flip_only()).sample_params(5, "cpu", _gen(10))) == {"flip"}


# ---- each operator against a hand computation --------------------------------------------


def test_flip_reverses_width_only_where_it_fires() -> None:
    clips = _clips(n=2)
    out = ClipAugment().apply(clips, {"flip": torch.tensor([True, False])})
    assert torch.equal(out[0], clips[0].flip(-1))
    assert torch.equal(out[1], clips[1])


def test_contrast_multiplies_and_clips() -> None:
    clips = torch.tensor([-0.9, -0.5, 0.0, 0.3, 0.8]).view(1, 1, 1, 1, 5).expand(2, 3, 2, 2, 5)
    params = _fires(2, contrast=[True, False], contrast_factor=[1.5, 0.5])
    out = ClipAugment().apply(clips, params)
    expected = torch.tensor([-1.0, -0.75, 0.0, 0.45, 1.0])
    torch.testing.assert_close(out[0, 1, 1, 0], expected)
    assert torch.equal(out[1], clips[1])


def test_brightness_adds_and_clips() -> None:
    clips = torch.tensor([-0.9, -0.2, 0.0, 0.7]).view(1, 1, 1, 1, 4).expand(2, 3, 2, 2, 4)
    out = ClipAugment().apply(clips, _fires(2, brightness_offset=[0.4, -0.3]))
    torch.testing.assert_close(out[0, 2, 0, 1], torch.tensor([-0.5, 0.2, 0.4, 1.0]))
    torch.testing.assert_close(out[1, 0, 1, 0], torch.tensor([-1.0, -0.5, -0.3, 0.4]))


def test_channel_split_copies_source_into_target() -> None:
    clips = _clips(n=3)
    params = _fires(3, split_target=[0, 2, 1], split_source=[1, 0, 2])
    params["channel_split"] = torch.tensor([True, True, False])
    out = ClipAugment().apply(clips, params)
    assert torch.equal(out[0, 0], clips[0, 1]) and torch.equal(out[0, 1:], clips[0, 1:])
    assert torch.equal(out[1, 2], clips[1, 0]) and torch.equal(out[1, :2], clips[1, :2])
    assert torch.equal(out[2], clips[2])


def test_hue_zero_is_identity_and_third_turn_maps_red_to_green() -> None:
    aug = ClipAugment()
    clips = _clips(n=2)
    out = aug.apply(clips, _fires(2, hue_shift=[0.0, 0.0]))
    torch.testing.assert_close(out, clips, rtol=0, atol=1e-5)
    red = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1, 1).expand(3, 3, 2, 4, 4)
    out = aug.apply(red, _fires(3, hue_shift=[1 / 3, -1 / 3, 0.5]))
    colours = ([-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0], [-1.0, 1.0, 1.0])
    green, blue, cyan = (torch.tensor(c).view(3, 1, 1, 1) for c in colours)
    torch.testing.assert_close(out[0], green.expand_as(out[0]), rtol=0, atol=1e-4)
    torch.testing.assert_close(out[1], blue.expand_as(out[1]), rtol=0, atol=1e-4)
    torch.testing.assert_close(out[2], cyan.expand_as(out[2]), rtol=0, atol=1e-4)


def _manual_blur(frame: torch.Tensor, sigma: float, size: int = 7) -> torch.Tensor:
    """A (3, H, W) frame convolved with a normalised size x size Gaussian, reflect border."""
    offsets = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = torch.outer(g, g) / torch.outer(g, g).sum()
    weight = kernel.expand(3, 1, size, size).to(frame.dtype)
    padded = F.pad(frame[None], [size // 2] * 4, mode="reflect")
    return F.conv2d(padded, weight, groups=3)[0]


def test_blur_matches_manual_gaussian_convolution() -> None:
    clips = _clips(n=2, t=3, h=16, w=18)
    sigmas = [0.7, 1.9]
    out = ClipAugment().apply(clips, _fires(2, blur_sigma=sigmas))
    for i, sigma in enumerate(sigmas):
        for t in range(3):
            expected = _manual_blur(clips[i, :, t], sigma)
            torch.testing.assert_close(out[i, :, t], expected, rtol=0, atol=1e-5)
    assert out.var() < 0.5 * clips.var()  # uniform noise loses most of its variance
    constant = torch.full((1, 3, 2, 10, 10), 0.3)
    blurred = ClipAugment().apply(constant, _fires(1, blur_sigma=[1.5]))
    torch.testing.assert_close(blurred, constant)


def test_invert_negates() -> None:
    clips = _clips(n=2)
    out = ClipAugment(ALL_ON).apply(clips, {"invert": torch.tensor([True, False])})
    assert torch.equal(out[0], -clips[0]) and torch.equal(out[1], clips[1])


def test_operators_run_in_documented_order() -> None:
    """Contrast before brightness: 0.8 * 1.5 clips to 1.0, then -0.5 gives 0.5."""
    clips = torch.full((1, 3, 1, 4, 4), 0.8)
    out = ClipAugment().apply(clips, _fires(1, contrast_factor=[1.5], brightness_offset=[-0.5]))
    torch.testing.assert_close(out, torch.full_like(clips, 0.5))


# ---- reproducibility and the flip-only baseline ------------------------------------------


def test_seeded_generator_reproduces() -> None:
    aug = ClipAugment(ALL_ON)
    clips = _clips(n=6)
    assert torch.equal(aug(clips, _gen(11)), aug(clips, _gen(11)))
    assert not torch.equal(aug(clips, _gen(11)), aug(clips, _gen(12)))


def test_flip_only_changes_nothing_but_flips() -> None:
    clips = _clips(n=16)
    out = ClipAugment(flip_only())(clips, generator=_gen(13))
    flipped = [torch.equal(o, c.flip(-1)) for o, c in zip(out, clips, strict=True)]
    kept = [torch.equal(o, c) for o, c in zip(out, clips, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert any(flipped) and any(kept)
    # The same generator state gives the same flips as the full set draws.
    full = ClipAugment().sample_params(16, "cpu", _gen(13))
    assert flipped == full["flip"].tolist()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda_with_cuda_generator() -> None:
    clips = _clips(n=4).cuda()
    aug = ClipAugment(ALL_ON)
    generator = torch.Generator(device="cuda").manual_seed(0)
    out = aug(clips, generator)
    assert out.device == clips.device and out.min() >= -1 and out.max() <= 1
    again = aug(clips, torch.Generator(device="cuda").manual_seed(0))
    assert torch.equal(out, again)
    params = aug.sample_params(4, clips.device, _gen(0))  # a CPU generator works too
    assert params["flip"].device == clips.device
    cpu_out = aug.apply(clips.cpu(), {k: v.cpu() for k, v in params.items() if k != "noise"})
    gpu_out = aug.apply(clips, {k: v for k, v in params.items() if k != "noise"})
    torch.testing.assert_close(gpu_out.cpu(), cpu_out, rtol=0, atol=1e-4)


def test_describe_labels_the_operator_set():
    assert AugmentConfig().describe() == "SPEC set"
    assert AugmentConfig(noise=True).describe() == "SPEC set+noise"
    assert flip_only().describe() == "flip"
    assert AugmentConfig(flip=False, contrast=False, brightness=False, hue=False, blur=False,
                         channel_split=False).describe() == "none"
    assert AugmentConfig(blur=False, p=0.3).describe() == (
        "flip+contrast+brightness+hue+channel_split (p=0.3)")


# ---- the fused pass equals the kornia reference, clip by clip ----------------------------

FUSED_CASES = [*(op for op in OPERATORS), "all"]


def _reference_and_fused(
    op: str, seed: int, compiled: bool = False, channels_last: bool = False
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    aug = ClipAugment(AugmentConfig(p=0.5, invert=True, noise=True), compiled=compiled)
    clips = _clips(n=8, t=3, h=11, w=13, seed=seed)
    clips[0, :, 0] = 1.0  # saturated, grey and black pixels exercise the HSV edge cases
    clips[1, :, :, 0] = 0.25
    clips[2, :, 1] = -1.0
    if channels_last:
        clips = clips.contiguous(memory_format=torch.channels_last_3d)
    drawn = aug.sample_params(clips.shape[0], "cpu", _gen(seed + 100))  # the same draws
    params = drawn if op == "all" else {key: drawn[key] for key in (op, *OPERATORS[op])}
    return aug.apply(clips, params, reference=True), aug.apply(clips, params), params


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("op", FUSED_CASES)
def test_fused_equals_reference_clip_by_clip(op: str, seed: int) -> None:
    reference, fused, params = _reference_and_fused(op, seed, channels_last=seed == 1)
    assert fused.shape == reference.shape and fused.dtype == reference.dtype
    for i in range(reference.shape[0]):
        torch.testing.assert_close(fused[i], reference[i], rtol=0, atol=1e-5, msg=f"{op} clip {i}")
    masks = [params[key] for key in params if key in OPERATORS]
    fired = torch.stack(masks).any(0)
    assert fired.any()
    unchanged = ~fired
    assert torch.equal(fused[unchanged], reference[unchanged])  # clips that no operator hits


def test_fused_hue_matches_kornia_on_every_hue_and_shift() -> None:
    """All six hue sextants, grey, black and white, shifts across the whole allowed range."""
    values = torch.linspace(-1, 1, 9)
    grid = torch.cartesian_prod(values, values, values).T  # (3, 729) colours
    clips = grid.reshape(1, 3, 1, 27, 27).expand(7, -1, -1, -1, -1).contiguous()
    shifts = torch.tensor([-0.5, -0.25, -0.1, 0.0, 0.05, 1 / 3, 0.5])
    aug = ClipAugment()
    params = _fires(7, hue_shift=shifts)
    torch.testing.assert_close(aug.apply(clips, params), aug.apply(clips, params, reference=True),
                               rtol=0, atol=1e-5)


def test_fused_keeps_memory_format_and_input() -> None:
    aug = ClipAugment(ALWAYS)
    clips = _clips(n=3).contiguous(memory_format=torch.channels_last_3d)
    before = clips.clone()
    out = aug(clips, _gen(0))
    assert out.is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.equal(clips, before)


def test_compiled_fused_equals_reference() -> None:
    """``torch.compile``d pass (or its eager fallback where compiling fails) = reference."""
    reference, fused, _ = _reference_and_fused("all", seed=5, compiled=True, channels_last=True)
    torch.testing.assert_close(fused, reference, rtol=0, atol=1e-5)


def test_compile_failure_falls_back_to_eager(monkeypatch, caplog) -> None:
    import vidkd.data.augment as augment_module

    def broken(*args, **kwargs):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

    monkeypatch.setattr(augment_module, "_compiled_pass", broken)
    monkeypatch.setattr(augment_module, "_compile_failed", False)
    aug = ClipAugment(ALWAYS, compiled=True)
    clips = _clips(n=2)
    params = aug.sample_params(2, "cpu", _gen(0))
    with caplog.at_level("WARNING", logger="vidkd"):
        out = aug.apply(clips, params)
    torch.testing.assert_close(out, aug.apply(clips, params, reference=True), rtol=0, atol=1e-5)
    assert "running it eagerly" in caplog.text and augment_module._compile_failed


def test_the_pass_is_compiled_on_a_gpu_and_under_train_compile() -> None:
    """On a GPU the eager pass streams the batch through memory once per operator step (1.13x
    a baseline step on an H200), so it compiles there by default; on a CPU only when asked."""
    from vidkd.data.augment import compiled_on

    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert compiled_on(gpu, False) and compiled_on(gpu, True) and compiled_on(cpu, True)
    assert not compiled_on(cpu, False)


def test_training_and_bench_choose_compilation_by_device(tmp_path, synthetic_cache, tiny_config,
                                                          monkeypatch):
    """Both build their augmentation through ``compiled_on(device, train.compile)``: a call
    site that went back to ``train.compile`` alone would run the eager pass on GPUs."""
    from conftest import tiny_bench

    import vidkd.engine.bench as bench_module
    import vidkd.engine.train as train_module
    from vidkd.config import config_from_dict

    for module in (train_module, bench_module):
        calls: list[tuple[str, bool]] = []
        monkeypatch.setattr(module, "compiled_on",
                            lambda device, flag, calls=calls: calls.append((device.type, flag)) or False)
        values = tiny_config(synthetic_cache, tmp_path / module.__name__, train={"epochs": 1})
        if module is train_module:
            train_module.train(config_from_dict(values), progress=False)
        else:
            tiny_bench(tmp_path, values)
        assert calls and set(calls) == {("cpu", False)}, module.__name__
