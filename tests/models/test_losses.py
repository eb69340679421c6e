"""CE + soft Dice loss: hand-computed values, edge cases and bad inputs."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.models import DiceCELoss, InputShapeError, ModelConfigError, soft_dice_per_class


def test_uniform_logits_golden_value() -> None:
    """Zero logits: p = 1/4 everywhere, CE = ln 4, dice_c = 2 * n_c / 4 / (N / 4 + n_c)."""
    target = torch.tensor([[[0, 1, 1, 2], [3, 3, 3, 0]]])  # N = 8 pixels: n1 = 2, n2 = 1, n3 = 3
    logits = torch.zeros(1, 4, 2, 4)
    dice = soft_dice_per_class(logits, target, (1, 2, 3), smooth=0.0)
    expected = [2 * n * 0.25 / (8 * 0.25 + n) for n in (2, 1, 3)]
    assert torch.allclose(dice, torch.tensor(expected))
    loss = DiceCELoss(smooth=1e-12)(logits, target)
    assert loss.item() == pytest.approx(math.log(4) + 1 - sum(expected) / 3, rel=1e-6)


def test_perfect_prediction_has_near_zero_loss() -> None:
    target = torch.randint(0, 4, (2, 8, 8))
    logits = 50.0 * torch.nn.functional.one_hot(target, 4).permute(0, 3, 1, 2).float()
    assert DiceCELoss()(logits, target).item() < 1e-4


def test_background_is_not_in_the_dice_term() -> None:
    """Missing the only LV pixel: Dice is ~1 for the absent RV and MYO (smoothed), 0 for LV, so the Dice
    loss is 1 - 2/3; with background counted it would be 1 - (30/31 + 2) / 4 instead."""
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, 0, 0] = 3
    logits = torch.zeros(1, 4, 4, 4)
    logits[:, 0] = 30.0  # confident background everywhere
    assert DiceCELoss(ce_weight=0.0)(logits, target).item() == pytest.approx(1 / 3, abs=1e-4)
    with_background = DiceCELoss(ce_weight=0.0, classes=(0, 1, 2, 3))(logits, target).item()
    assert with_background == pytest.approx(1 - (30 / 31 + 2) / 4, abs=1e-4)


def test_absent_structure_keeps_finite_gradient() -> None:
    """A slice without RV (apex): the batch Dice of RV is smoothed, never 0/0."""
    torch.manual_seed(0)
    target = torch.full((2, 6, 6), 3)
    target[:, :2] = 0
    logits = torch.randn(2, 4, 6, 6, requires_grad=True)
    loss = DiceCELoss()(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad is not None and torch.isfinite(logits.grad).all()


def test_loss_decreases_towards_the_target() -> None:
    target = torch.randint(0, 4, (1, 6, 6))
    onehot = torch.nn.functional.one_hot(target, 4).permute(0, 3, 1, 2).float()
    loss = DiceCELoss()
    assert loss(5 * onehot, target) < loss(1 * onehot, target) < loss(torch.zeros_like(onehot), target)


@pytest.mark.parametrize(
    ("logits", "target", "message"),
    [
        (torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long), r"logits must be \(B, 4, H, W\)"),
        (
            torch.zeros(1, 4, 4, 4),
            torch.zeros(1, 4, 5, dtype=torch.long),
            r"target must be \(B, H, W\) = \(1, 4, 4\)",
        ),
        (torch.zeros(1, 4, 4, 4), torch.zeros(1, 4, 4), "integer class labels"),
    ],
)
def test_bad_inputs_raise(logits: torch.Tensor, target: torch.Tensor, message: str) -> None:
    with pytest.raises(InputShapeError, match=message):
        DiceCELoss()(logits, target)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classes": (1, 4)}, "subset of 0..3"),
        ({"classes": ()}, "non-empty"),
        ({"ce_weight": 0.0, "dice_weight": 0.0}, "not both 0"),
        ({"dice_weight": -1.0}, ">= 0"),
        ({"smooth": 0.0}, "smooth must be > 0"),
        ({"num_classes": 1}, "num_classes must be >= 2"),
    ],
)
def test_bad_configuration_raises(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ModelConfigError, match=message):
        DiceCELoss(**kwargs)  # type: ignore[arg-type]
