"""The SKD-SRL clip augmentation set, applied batched on the training device.

SPEC "Data protocol" (SKD-SRL section III-B, "Teaching yourself" released code): each
operator fires on a clip with probability ``p = 0.5``; its parameters are drawn once per
clip and shared by all T frames of that clip; different clips get independent draws.
Values live on the [-1, 1] scale throughout.

Operators, in the order they are applied:

1. horizontal flip (reverse W);
2. contrast: ``x * a``, ``a ~ U(0.5, 1.5)``, clipped to [-1, 1];
3. brightness: ``x + b``, ``b ~ U(-0.5, 0.5)``, clipped to [-1, 1];
4. hue: rotate the hue circle by ``h ~ U(-0.1, 0.1)`` turns (``kornia.enhance.adjust_hue``);
5. Gaussian blur: 2D per frame, 7x7 kernel, ``sigma ~ U(0.1, 2.0)``, reflect border
   (``kornia.filters.gaussian_blur2d``);
6. channel splitting: pick colour channels ``c1 != c2`` and overwrite ``c1`` with ``c2``;
7. colour inversion ``x -> -x`` (off by default);
8. Gaussian noise ``x + N(0, noise_std^2)`` per pixel, clipped (off by default).

The SPEC's "contrast and brightness x * a + b" is two operators here, each with its own
coin flip. Randomness comes only from an explicit ``torch.Generator``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kornia.enhance import adjust_hue
from kornia.filters import gaussian_blur2d, get_gaussian_kernel1d
from torch import Tensor

from vidkd.errors import VidkdError

log = logging.getLogger("vidkd")

# (mask key, value keys) per operator, in the order `apply` runs them.
OPERATORS: dict[str, tuple[str, ...]] = {
    "flip": (),
    "contrast": ("contrast_factor",),
    "brightness": ("brightness_offset",),
    "hue": ("hue_shift",),
    "blur": ("blur_sigma",),
    "channel_split": ("split_target", "split_source"),
    "invert": (),
    "noise": ("noise_seed",),
}
_KNOWN_KEYS = frozenset(OPERATORS) | frozenset(k for ks in OPERATORS.values() for k in ks)


@dataclass(frozen=True)
class AugmentConfig:
    """Switches and parameter ranges of the augmentation set (SPEC "Data protocol").

    ``p`` is the firing probability of every enabled operator. Ranges are closed-open
    uniform ranges on the [-1, 1] value scale; ``hue_range`` is in turns of the hue circle.
    """

    p: float = 0.5
    flip: bool = True
    contrast: bool = True
    brightness: bool = True
    hue: bool = True
    blur: bool = True
    channel_split: bool = True
    invert: bool = False
    noise: bool = False
    contrast_range: tuple[float, float] = (0.5, 1.5)
    brightness_range: tuple[float, float] = (-0.5, 0.5)
    hue_range: tuple[float, float] = (-0.1, 0.1)
    blur_sigma_range: tuple[float, float] = (0.1, 2.0)
    blur_kernel: int = 7
    noise_std: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise VidkdError(f"augment p={self.p} is not a probability; use a value in [0, 1]")
        for name in ("contrast_range", "brightness_range", "hue_range", "blur_sigma_range"):
            low, high = getattr(self, name)
            if not low <= high:
                raise VidkdError(f"augment {name}=({low}, {high}) is empty; give (low, high)")
        if self.contrast_range[0] < 0:
            raise VidkdError("augment contrast_range must be non-negative (it multiplies)")
        if self.blur_sigma_range[0] <= 0:
            raise VidkdError("augment blur_sigma_range must be positive")
        if abs(self.hue_range[0]) > 0.5 or abs(self.hue_range[1]) > 0.5:
            raise VidkdError(
                "augment hue_range is in turns of the hue circle; keep it in [-0.5, 0.5]"
            )
        if self.blur_kernel < 1 or self.blur_kernel % 2 == 0:
            raise VidkdError(
                f"augment blur_kernel={self.blur_kernel} must be a positive odd integer"
            )
        if self.noise_std < 0:
            raise VidkdError(f"augment noise_std={self.noise_std} must be non-negative")

    def enabled(self) -> list[str]:
        """Names of the switched-on operators, in application order."""
        return [name for name in OPERATORS if getattr(self, name)]

    def describe(self) -> str:
        """A short label for result tables: ``SPEC set``, ``flip``, ``SPEC set+noise``..."""
        spec_set = [name for name in OPERATORS if getattr(AugmentConfig, name)]
        ops = self.enabled()
        if set(spec_set) <= set(ops):
            ops = ["SPEC set"] + [name for name in ops if name not in spec_set]
        label = "+".join(ops) or "none"
        return label if self.p == 0.5 else f"{label} (p={self.p})"


def compiled_on(device: torch.device, train_compile: bool) -> bool:
    """Whether the fused per-pixel pass runs through ``torch.compile``: under
    ``train.compile``, and always on a GPU. There the eager pass is some 40 elementwise
    kernels that each stream the whole batch through memory: on an H200 it made
    ``baseline_da`` 1.13x ``baseline`` (``benchmarks/gpu_check.sh``, 2026-11-30).
    ``TORCHDYNAMO_DISABLE=1`` (PyTorch's own switch) keeps it eager."""
    return train_compile or device.type == "cuda"


def flip_only() -> AugmentConfig:
    """The crop + flip baseline (SPEC method ``baseline``): only horizontal flip is on."""
    return AugmentConfig(
        flip=True,
        contrast=False,
        brightness=False,
        hue=False,
        blur=False,
        channel_split=False,
        invert=False,
        noise=False,
    )


class ClipAugment(torch.nn.Module):
    """Per-clip random augmentation of a batch of clips ``(N, 3, T, H, W)`` in [-1, 1].

    ``forward`` = ``sample_params`` + ``apply``. No parameters, no buffers, no global RNG.
    The input is never modified in place; the output has the input's shape and dtype
    (float16/bfloat16 hue and blur are computed in float32 and rounded once).
    Blur uses a reflect border, so frames must be larger than ``blur_kernel // 2``.
    """

    def __init__(self, config: AugmentConfig = AugmentConfig(), compiled: bool = False) -> None:
        super().__init__()
        self.config = config
        self.compiled = compiled

    def extra_repr(self) -> str:
        return f"p={self.config.p}, operators={self.config.enabled()}, compiled={self.compiled}"

    def sample_params(
        self,
        n: int,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Draw the per-clip parameters of ``n`` clips.

        Returns, for each enabled operator, a bool mask ``(n,)`` under the operator's name
        (True = fires on that clip) and its values: ``contrast_factor``,
        ``brightness_offset``, ``hue_shift`` (turns), ``blur_sigma``: float32 ``(n,)``;
        ``split_target`` (c1) and ``split_source`` (c2): int64 ``(n,)`` with c1 != c2;
        ``noise_seed``: int64 scalar seeding the per-pixel noise drawn in ``apply``.
        Every operator's draws are made even when it is off, so a given generator state
        yields the same flips (etc.) whatever the other switches are. Draws happen on the
        generator's device and are moved to ``device``.
        """
        cfg = self.config
        device = torch.device(device) if device is not None else torch.device("cpu")
        draw_device = generator.device if generator is not None else device

        def uniform(bounds: tuple[float, float]) -> Tensor:
            u = torch.rand(n, generator=generator, device=draw_device)
            return bounds[0] + (bounds[1] - bounds[0]) * u

        def fires() -> Tensor:
            return torch.rand(n, generator=generator, device=draw_device) < cfg.p

        drawn: dict[str, Tensor] = {"flip": fires()}
        drawn["contrast"], drawn["contrast_factor"] = fires(), uniform(cfg.contrast_range)
        drawn["brightness"], drawn["brightness_offset"] = fires(), uniform(cfg.brightness_range)
        drawn["hue"], drawn["hue_shift"] = fires(), uniform(cfg.hue_range)
        drawn["blur"], drawn["blur_sigma"] = fires(), uniform(cfg.blur_sigma_range)
        drawn["channel_split"] = fires()
        target = torch.randint(0, 3, (n,), generator=generator, device=draw_device)
        step = torch.randint(1, 3, (n,), generator=generator, device=draw_device)
        drawn["split_target"], drawn["split_source"] = target, (target + step) % 3
        drawn["invert"] = fires()
        drawn["noise"] = fires()
        drawn["noise_seed"] = torch.randint(
            0, 2**62, (), generator=generator, device=draw_device, dtype=torch.int64
        )
        return {key: drawn[key].to(device) for op in cfg.enabled() for key in (op, *OPERATORS[op])}

    def apply(self, clips: Tensor, params: dict[str, Tensor], reference: bool = False) -> Tensor:
        """Apply ``params`` (as from ``sample_params``) to ``clips`` ``(N, 3, T, H, W)``.

        An operator runs when its mask key is present in ``params`` (regardless of the
        config switches), so hand-made params can exercise one operator alone.
        The fused pass (:func:`fused_apply`) runs by default; ``reference=True`` runs the
        operators one by one with kornia (:meth:`apply_reference`), the definition the
        fused pass is tested against.
        """
        _check_clips(clips)
        unknown = set(params) - _KNOWN_KEYS
        if unknown:
            raise ValueError(f"unknown augmentation params {sorted(unknown)}")
        if reference:
            return self.apply_reference(clips, params)
        return fused_apply(clips, params, self.config.blur_kernel, self.config.noise_std,
                           compiled=self.compiled)

    def apply_reference(self, clips: Tensor, params: dict[str, Tensor]) -> Tensor:
        """The operators one at a time, hue and blur by kornia on the clips that fire.

        Cheap operators use ``torch.where`` over the batch; hue
        (``kornia.enhance.adjust_hue``) and blur (``kornia.filters.gaussian_blur2d``) run
        only on the clips whose mask is set.
        """
        _check_clips(clips)
        out = clips
        n, dtype, device = clips.shape[0], clips.dtype, clips.device

        def mask(op: str) -> Tensor:
            return params[op].to(device=device, dtype=torch.bool).view(n, 1, 1, 1, 1)

        def value(key: str) -> Tensor:
            return params[key].to(device=device, dtype=dtype).view(n, 1, 1, 1, 1)

        if "flip" in params:
            out = torch.where(mask("flip"), out.flip(-1), out)
        if "contrast" in params:
            scaled = (out * value("contrast_factor")).clamp(-1.0, 1.0)
            out = torch.where(mask("contrast"), scaled, out)
        if "brightness" in params:
            shifted = (out + value("brightness_offset")).clamp(-1.0, 1.0)
            out = torch.where(mask("brightness"), shifted, out)
        if "hue" in params:
            turns = params["hue_shift"].to(device=device, dtype=torch.float32)
            out = _on_subset(out, params["hue"], lambda sub, idx: _shift_hue(sub, turns[idx]))
        if "blur" in params:
            sigma = params["blur_sigma"].to(device=device, dtype=torch.float32)
            kernel = self.config.blur_kernel
            out = _on_subset(out, params["blur"], lambda sub, idx: _blur(sub, sigma[idx], kernel))
        if "channel_split" in params:
            target = params["split_target"].to(device=device, dtype=torch.long)
            source = params["split_source"].to(device=device, dtype=torch.long)
            source_channel = out[torch.arange(n, device=device), source].unsqueeze(1)
            overwrite = torch.arange(3, device=device) == target[:, None]  # (N, 3)
            overwrite &= params["channel_split"].to(device=device, dtype=torch.bool)[:, None]
            out = torch.where(overwrite.view(n, 3, 1, 1, 1), source_channel, out)
        if "invert" in params:
            out = torch.where(mask("invert"), -out, out)
        if "noise" in params:
            noise_generator = torch.Generator(device=device)
            noise_generator.manual_seed(int(params["noise_seed"]))
            noise = torch.randn(out.shape, generator=noise_generator, device=device)
            noisy = (out + (self.config.noise_std * noise).to(dtype)).clamp(-1.0, 1.0)
            out = torch.where(mask("noise"), noisy, out)
        return out

    def forward(self, clips: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw fresh per-clip parameters from ``generator`` and apply them."""
        _check_clips(clips)
        params = self.sample_params(clips.shape[0], clips.device, generator)
        return self.apply(clips, params)


def _check_clips(clips: Tensor) -> None:
    if clips.dim() != 5 or clips.shape[1] != 3 or not clips.is_floating_point():
        raise ValueError(
            f"expected float clips (N, 3, T, H, W), got {tuple(clips.shape)} {clips.dtype}"
        )


def _on_subset(
    clips: Tensor, fires: Tensor, operator: Callable[[Tensor, Tensor], Tensor]
) -> Tensor:
    """Run ``operator(selected_clips, indices)`` on the clips where ``fires``; copy back."""
    idx = fires.to(device=clips.device, dtype=torch.bool).nonzero().squeeze(1)
    if idx.numel() == 0:
        return clips
    result = operator(clips.index_select(0, idx), idx)
    return clips.index_copy(0, idx, result.to(clips.dtype))


def _frames(clips: Tensor) -> Tensor:
    """(M, 3, T, H, W) -> (M*T, 3, H, W); float16/bfloat16 are computed in float32."""
    m, c, t, h, w = clips.shape
    frames = clips.transpose(1, 2).reshape(m * t, c, h, w)
    return frames if frames.dtype in (torch.float32, torch.float64) else frames.float()


def _unframes(frames: Tensor, like: Tensor) -> Tensor:
    m, c, t, h, w = like.shape
    return frames.reshape(m, t, c, h, w).transpose(1, 2).to(like.dtype)


def _shift_hue(clips: Tensor, turns: Tensor) -> Tensor:
    """Rotate hue by ``turns[i]`` of the circle for every frame of clip i."""
    t = clips.shape[2]
    rgb01 = ((_frames(clips) + 1.0) * 0.5).clamp(0.0, 1.0)
    radians = (turns * (2.0 * math.pi)).repeat_interleave(t)
    shifted = adjust_hue(rgb01, radians) * 2.0 - 1.0
    return _unframes(shifted.clamp(-1.0, 1.0), clips)


def _blur(clips: Tensor, sigma: Tensor, kernel: int) -> Tensor:
    """2D Gaussian blur of every frame of clip i with isotropic ``sigma[i]``."""
    t = clips.shape[2]
    per_frame_sigma = sigma.repeat_interleave(t)[:, None].expand(-1, 2)
    blurred = gaussian_blur2d(_frames(clips), kernel, per_frame_sigma, border_type="reflect")
    return _unframes(blurred.clamp(-1.0, 1.0), clips)


# ---- the fused pass ----------------------------------------------------------------------
#
# The same operators as ``apply_reference``, as a per-pixel pass plus a blur:
#
# - flip, contrast, brightness, hue, channel splitting and inversion are one function of
#   the batch and per-clip parameter tensors (broadcast expressions over (N, 3, T, H, W)).
#   ``torch.compile`` makes it a single loop over the batch, every clip computed and
#   ``torch.where`` keeping the ones that fire; eagerly, hue computes only the clips
#   that fire.
# - the blur runs on the clips that fire, as two depthwise 1D convolutions (W, then H) with
#   kornia's Gaussian taps and a reflect border.
#
# The reference blurs before splitting and inverting; both commute with the blur (the
# same kernel on every channel, a clamp symmetric about 0), so here they come first and
# the per-pixel work is a single pass.

_compiled_pass: Callable[..., Tensor] | None = None
_compile_failed = False


def fused_apply(
    clips: Tensor,
    params: dict[str, Tensor],
    blur_kernel: int = 7,
    noise_std: float = 0.1,
    compiled: bool = False,
) -> Tensor:
    """``ClipAugment.apply`` as one per-pixel pass and a separable blur; equal to the
    reference to 1e-5.

    ``compiled`` runs the per-pixel pass through ``torch.compile`` (compiled once per
    input shape and operator set); where compiling fails (no C++ compiler, an unsupported
    backend) the eager pass runs instead, after one warning.
    """
    global _compiled_pass, _compile_failed
    n, device = clips.shape[0], clips.device
    work = clips if clips.dtype in (torch.float32, torch.float64) else clips.float()
    plan = _plan(params, n, device, work.dtype)
    out = None
    if compiled and not _compile_failed:
        if _compiled_pass is None:
            _compiled_pass = torch.compile(_pixel_pass)
        try:
            out = _compiled_pass(work, plan, False)
        except Exception as error:  # noqa: BLE001 - any compiler failure falls back to eager
            _compile_failed = True
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            log.warning("torch.compile of the augmentation failed (%s); running it eagerly", reason)
    if out is None:
        out = _pixel_pass(work, plan, True)
    if "blur" in params:
        sigma = params["blur_sigma"].to(device=device, dtype=work.dtype).view(n, 1)
        taps = get_gaussian_kernel1d(blur_kernel, sigma)  # (N, K): kornia's taps
        out = _where_fires(out, plan["blur"], _separable_blur, taps, subset=True)
    if "noise" in params:  # per pixel, after everything else (as the reference draws it)
        noise_generator = torch.Generator(device=device)
        noise_generator.manual_seed(int(params["noise_seed"]))
        noise = torch.randn(out.shape, generator=noise_generator, device=device)
        noisy = (out + (noise_std * noise).to(out.dtype)).clamp(-1.0, 1.0)
        out = torch.where(_per_clip(params["noise"], n, device, torch.bool), noisy, out)
    out = out.to(clips.dtype)
    if clips.is_contiguous(memory_format=torch.channels_last_3d) and not clips.is_contiguous():
        return out.contiguous(memory_format=torch.channels_last_3d)
    return out.contiguous()


def _per_clip(values: Tensor, n: int, device: torch.device, dtype: torch.dtype, dims: int = 5) -> Tensor:
    return values.to(device=device, dtype=dtype).view(n, *([1] * (dims - 1)))


def _plan(params: dict[str, Tensor], n: int, device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
    """Per-clip tensors shaped to broadcast over (N, 3, T, H, W), or (N, T, H, W) for hue."""
    plan: dict[str, Tensor] = {}
    for op in ("flip", "contrast", "brightness", "hue", "blur", "invert"):
        if op in params:
            plan[op] = _per_clip(params[op], n, device, torch.bool)
    if "contrast" in params:
        plan["contrast_factor"] = _per_clip(params["contrast_factor"], n, device, dtype)
    if "brightness" in params:
        plan["brightness_offset"] = _per_clip(params["brightness_offset"], n, device, dtype)
    if "hue" in params:
        plan["hue_shift"] = _per_clip(params["hue_shift"], n, device, dtype, dims=4)
    if "channel_split" in params:
        target = params["split_target"].to(device=device, dtype=torch.long)
        overwrite = torch.arange(3, device=device) == target[:, None]
        overwrite &= params["channel_split"].to(device=device, dtype=torch.bool)[:, None]
        plan["split_overwrite"] = overwrite.view(n, 3, 1, 1, 1)
        plan["split_source"] = _per_clip(params["split_source"], n, device, torch.long, dims=4)
    return plan


def _pixel_pass(x: Tensor, plan: dict[str, Tensor], subset: bool) -> Tensor:
    """Flip, contrast, brightness, hue, channel splitting, inversion; ``x`` (N, 3, T, H, W).

    ``subset`` (eager): hue computes only the clips that fire. Otherwise every clip is
    computed and ``torch.where`` keeps the ones that fire (no data-dependent shapes, which
    is what ``torch.compile`` wants).
    """
    if "flip" in plan:
        x = torch.where(plan["flip"], x.flip(-1), x)
    if "contrast" in plan:
        x = torch.where(plan["contrast"], (x * plan["contrast_factor"]).clamp(-1.0, 1.0), x)
    if "brightness" in plan:
        x = torch.where(plan["brightness"], (x + plan["brightness_offset"]).clamp(-1.0, 1.0), x)
    if "hue" in plan:
        x = _where_fires(x, plan["hue"], _rotate_hue, plan["hue_shift"], subset)
    if "split_overwrite" in plan:
        red, green, blue = x.unbind(1)
        source = plan["split_source"]
        source_channel = torch.where(source == 0, red, torch.where(source == 1, green, blue))
        x = torch.where(plan["split_overwrite"], source_channel.unsqueeze(1), x)
    if "invert" in plan:
        x = torch.where(plan["invert"], -x, x)
    return x


def _where_fires(
    x: Tensor, fires: Tensor, operator: Callable[[Tensor, Tensor], Tensor], values: Tensor,
    subset: bool,
) -> Tensor:
    if not subset:
        return torch.where(fires, operator(x, values), x)
    idx = fires.view(-1).nonzero().squeeze(1)
    if idx.numel() == 0:
        return x
    return x.index_copy(0, idx, operator(x.index_select(0, idx), values.index_select(0, idx)))


def _wrap(turns: Tensor) -> Tensor:
    """``turns mod 1`` (as ``floor`` is cheaper than ``%``); the hue circle is continuous,
    so a value that rounds to 1.0 instead of 0.0 gives the same colour."""
    return turns - torch.floor(turns)


def _rotate_hue(x: Tensor, turns: Tensor) -> Tensor:
    """Rotate the hue of every pixel of clip i by ``turns[i]``; kornia's HSV round trip.

    Same steps as ``kornia.color.rgb_to_hsv`` (eps 1e-8, the first maximal channel picks
    the sextant), the shift added in turns, and the closed form of ``hsv_to_rgb``:
    channel = V - V S clamp(min(k, 4 - k), 0, 1), k = (n + 6 H) mod 6, n = 5, 3, 1 for R, G, B.
    """
    red, green, blue = ((x + 1.0) * 0.5).clamp(0.0, 1.0).unbind(1)
    value = torch.maximum(torch.maximum(red, green), blue)
    delta = value - torch.minimum(torch.minimum(red, green), blue)
    saturation = delta / torch.where(value == 0, 1.0, value + 1e-8)
    delta = torch.where(delta == 0, 1.0, delta)
    red_c, green_c, blue_c = value - red, value - green, value - blue
    sector = torch.where(
        (red >= green) & (red >= blue), blue_c - green_c,
        torch.where(green >= blue, red_c - blue_c + 2.0 * delta, green_c - red_c + 4.0 * delta),
    )
    hue = _wrap(_wrap(sector / delta / 6.0) + turns)
    chroma = value * saturation

    def channel(offset: float) -> Tensor:
        k = 6.0 * _wrap(hue + offset / 6.0)
        return value - chroma * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)

    rgb = torch.stack((channel(5.0), channel(3.0), channel(1.0)), dim=1)
    return (rgb * 2.0 - 1.0).clamp(-1.0, 1.0)


def _separable_blur(x: Tensor, taps: Tensor) -> Tensor:
    """Per-frame 2D Gaussian blur of clip i as two depthwise 1D convolutions (W, then H)
    with ``taps[i]``, reflect border (kornia's separable ``gaussian_blur2d``), clipped."""
    n, c, t, h, w = x.shape
    size = taps.shape[1]
    radius = size // 2
    per_plane = taps.repeat_interleave(t * c, dim=0)  # one kernel per frame and channel
    planes = x.transpose(1, 2).reshape(1, n * t * c, h, w)
    planes = F.pad(planes, (radius, radius, 0, 0), mode="reflect")
    planes = F.conv2d(planes, per_plane.view(-1, 1, 1, size), groups=n * t * c)
    planes = F.pad(planes, (0, 0, radius, radius), mode="reflect")
    planes = F.conv2d(planes, per_plane.view(-1, 1, size, 1), groups=n * t * c)
    return planes.view(n, t, c, h, w).transpose(1, 2).clamp(-1.0, 1.0)
