"""What every segmentation network shares: the clip contract, argument checks and a rebuildable ``config``.

The contract: ``forward`` takes a clip (B, 2r+1, H, W) float tensor with the target frame in the middle
(index r) and returns logits (B, num_classes, H, W) for background, RV, MYO, LV. H and W must be multiples
of ``input_multiple`` (2**depth for a U-Net of that depth).

The constructor contract: a model's ``__init__`` takes the six common arguments first (``COMMON_ARGUMENTS``),
then its own, each a named parameter (no ``*args``/``**kwargs``; a class that breaks this is refused
when it is defined), and calls ``super().__init__()``. ``model.config`` is recorded from that signature
as the model is built: every argument, given or default, so ``build_model(model.name, **model.config)``
rebuilds the same architecture from a checkpoint and no argument can be left out of it by hand.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from torch import Tensor, nn

from pipeline.errors import ConfigError, PipelineError

NORMS = ("instance", "batch")
MAX_DEPTH = 7
MAX_RADIUS = 8
#: The arguments every model's constructor takes first, in this order.
COMMON_ARGUMENTS = ("radius", "num_classes", "base_channels", "depth", "norm", "input_size")


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


def class_map(scores: Tensor) -> Tensor:
    """The label map of (B, C, H, W) class scores (logits or probabilities): the index of the largest.

    ``max(1).indices`` rather than ``argmax(1)``: the same labels (both take the first of tied maxima),
    but torch's CPU argmax over the class axis is ~20x slower (54 vs 2 ms for 32 x 4 x 95 x 100 here).
    """
    return scores.max(1).indices


def _recording_arguments(cls: type, init: Callable[..., None]) -> Callable[..., None]:
    """``init`` that first records its bound arguments (defaults applied) as ``self.config``.

    Only the constructor of the class being built records: a parent's ``__init__`` reached through
    ``super().__init__(...)`` finds ``config`` already there.
    """
    signature = inspect.signature(init)
    names = list(signature.parameters)[1:]
    if tuple(names[: len(COMMON_ARGUMENTS)]) != COMMON_ARGUMENTS:
        raise TypeError(f"{cls.__name__}.__init__ must take {list(COMMON_ARGUMENTS)} first, got {names}")
    variadic = [p.name for p in signature.parameters.values() if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if variadic:
        raise TypeError(
            f"{cls.__name__}.__init__ must name its arguments (model.config records them), not {variadic}"
        )

    @functools.wraps(init)
    def __init__(self: SegmentationModel, *args: Any, **kwargs: Any) -> None:
        if "config" not in self.__dict__:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            self.__dict__["config"] = dict(list(bound.arguments.items())[1:])  # nn.Module is not set up yet
        init(self, *args, **kwargs)

    return __init__


class SegmentationModel(nn.Module):
    """Base class: validates the common arguments and the input clip, then calls ``_forward``.

    Subclasses set ``name`` (the registry key), define ``__init__`` by the constructor contract (module
    docstring) and implement ``_forward(clip) -> logits``.
    """

    name: ClassVar[str] = ""
    config: dict[str, Any]  # every constructor argument, recorded as the model is built

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording_arguments(cls, cls.__dict__["__init__"])  # type: ignore[method-assign]

    def __init__(self, *, input_multiple: int | None = None) -> None:
        """Check the common arguments recorded in ``config``; ``input_multiple`` defaults to 2**depth."""
        super().__init__()
        cfg = self.config
        self.radius = check_int("radius", cfg["radius"], minimum=0, maximum=MAX_RADIUS)
        self.num_classes = check_int("num_classes", cfg["num_classes"], minimum=2)
        self.base_channels = check_int("base_channels", cfg["base_channels"], minimum=2)
        self.depth = check_int("depth", cfg["depth"], minimum=1, maximum=MAX_DEPTH)
        self.norm = check_choice("norm", cfg["norm"], NORMS)
        self.in_frames = 2 * self.radius + 1
        self.input_multiple = input_multiple if input_multiple is not None else 2**self.depth
        self.input_size = check_input_size(
            cfg["input_size"],
            self.input_multiple,
            f"the network halves the image {self.input_multiple.bit_length() - 1} times",
        )

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
