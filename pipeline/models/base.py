"""What every segmentation network shares: the clip contract, argument checks and a rebuildable ``config``.

The contract: ``forward`` takes a clip (B, 2r+1, H, W) float tensor with the target frame in the middle
(index r) and returns logits (B, num_classes, H, W) for background, RV, MYO, LV. H and W must be multiples
of ``input_multiple`` (2**depth for a U-Net of that depth). ``model.config`` holds every constructor
argument, so ``build_model(model.name, **model.config)`` rebuilds the same architecture from a checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from torch import Tensor, nn

from pipeline.errors import ConfigError, PipelineError

NORMS = ("instance", "batch")
MAX_DEPTH = 7
MAX_RADIUS = 8


class ModelConfigError(ConfigError, ValueError):
    """A model argument is invalid; the message names the argument, the rule and the value."""


class InputShapeError(PipelineError, ValueError):
    """A tensor passed to a model has the wrong shape or dtype; the message gives expected and actual."""


def check_int(name: str, value: object, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` if it is an int (not a bool) within [minimum, maximum], else raise ModelConfigError."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ModelConfigError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ModelConfigError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ModelConfigError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ModelConfigError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_input_size(input_size: object, multiple: int, reason: str) -> tuple[int, int] | None:
    """Validate an optional (H, W) or int size against the divisibility the architecture needs."""
    if input_size is None:
        return None
    if isinstance(input_size, int) and not isinstance(input_size, bool):
        size = (input_size, input_size)
    elif isinstance(input_size, tuple | list) and len(input_size) == 2:
        size = (
            check_int("input_size[0]", input_size[0], minimum=1),
            check_int("input_size[1]", input_size[1], minimum=1),
        )
    else:
        raise ModelConfigError(f"input_size must be an int or a pair (H, W), got {input_size!r}")
    for axis, value in zip(("H", "W"), size, strict=True):
        if value <= 0 or value % multiple != 0:
            raise ModelConfigError(
                f"input_size {axis}={value} must be a positive multiple of {multiple} ({reason}); "
                f"the nearest valid sizes are {max(multiple, value // multiple * multiple)} and "
                f"{(value // multiple + 1) * multiple}"
            )
    return size


class SegmentationModel(nn.Module):
    """Base class: validates the common arguments and the input clip, then calls ``_forward``.

    Subclasses set ``name`` (the registry key) and implement ``_forward(clip) -> logits``.
    """

    name: ClassVar[str] = ""

    def __init__(
        self,
        *,
        radius: int,
        num_classes: int,
        base_channels: int,
        depth: int,
        norm: str,
        input_size: int | tuple[int, int] | None,
        config: dict[str, Any],
        input_multiple: int | None = None,
    ) -> None:
        super().__init__()
        self.radius = check_int("radius", radius, minimum=0, maximum=MAX_RADIUS)
        self.num_classes = check_int("num_classes", num_classes, minimum=2)
        self.base_channels = check_int("base_channels", base_channels, minimum=2)
        self.depth = check_int("depth", depth, minimum=1, maximum=MAX_DEPTH)
        self.norm = check_choice("norm", norm, NORMS)
        self.in_frames = 2 * radius + 1
        self.input_multiple = input_multiple if input_multiple is not None else 2**depth
        self.input_size = check_input_size(
            input_size,
            self.input_multiple,
            f"the network halves the image {self.input_multiple.bit_length() - 1} times",
        )
        self.config: dict[str, Any] = {
            "radius": radius,
            "num_classes": num_classes,
            "base_channels": base_channels,
            "depth": depth,
            "norm": norm,
            "input_size": input_size,
            **config,
        }

    def check_clip(self, clip: Tensor) -> None:
        """Raise InputShapeError unless ``clip`` is a float (B, 2r+1, H, W) with H, W multiples of input_multiple."""
        expected = f"(B, {self.in_frames}, H, W) with H and W multiples of {self.input_multiple}"
        if clip.dim() != 4:
            raise InputShapeError(
                f"{type(self).__name__} expects a clip {expected} (2r+1 = {self.in_frames} frames for r = "
                f"{self.radius}); got a {clip.dim()}D tensor of shape {tuple(clip.shape)}"
            )
        if not clip.is_floating_point():
            raise InputShapeError(
                f"{type(self).__name__} expects a floating-point clip, got dtype {clip.dtype}"
            )
        _, frames, h, w = clip.shape
        if frames != self.in_frames:
            raise InputShapeError(
                f"{type(self).__name__} was built for r = {self.radius}, i.e. clips {expected}; got "
                f"{frames} frames in shape {tuple(clip.shape)}"
            )
        if h % self.input_multiple or w % self.input_multiple or h == 0 or w == 0:
            raise InputShapeError(
                f"{type(self).__name__} expects a clip {expected}; got shape {tuple(clip.shape)} "
                f"(pad or resize H and W to a multiple of {self.input_multiple})"
            )

    def middle_frame(self, clip: Tensor) -> Tensor:
        """(B, 2r+1, H, W) -> (B, 1, H, W): the target frame."""
        return clip[:, self.radius : self.radius + 1]

    def forward(self, clip: Tensor) -> Tensor:
        """(B, 2r+1, H, W) clip -> (B, num_classes, H, W) logits."""
        self.check_clip(clip)
        return self._forward(clip)

    def _forward(self, clip: Tensor) -> Tensor:
        raise NotImplementedError
