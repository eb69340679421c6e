"""What the parts do, not just their shapes: zero-offset equivalences, identity attention, gradients to the
offset heads, the GridNet prior, ToFlow warping, and real learning on one synthetic clip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.models import DiceCELoss, InputShapeError, build_model
from pipeline.models.blocks import ConvBlock, DeformConvBlock, UNetCore
from pipeline.models.deunet import DeUNet
from pipeline.models.dgpa import DGPA
from pipeline.models.gridnet import GridNet
from pipeline.models.position_attention import PositionAttention
from pipeline.models.tdam import TDAM, EarlyFusion
from pipeline.models.toflow_unet import ToFlowUNet, warp


def test_fresh_tdam_is_early_fusion() -> None:
    """Zero-initialised offsets: TDAM's deformable fusion equals a plain conv over the stacked frames (Eq. 1)."""
    torch.manual_seed(0)
    tdam = TDAM(frames=3, out_channels=8, offset_channels=4, offset_depth=2)
    early = EarlyFusion(frames=3, out_channels=8)
    early.conv.weight.data.copy_(tdam.weight.data)
    assert early.conv.bias is not None
    early.conv.bias.data.copy_(tdam.bias.data)
    clip = torch.randn(2, 3, 16, 16)
    offset, mask = tdam.predict_offsets(clip)
    assert offset.shape == (2, 2 * 3 * 9, 16, 16) and mask is None
    assert torch.equal(offset, torch.zeros_like(offset))
    assert torch.allclose(tdam(clip), early(clip), atol=1e-5)


def test_fresh_modulated_tdam_is_early_fusion_too() -> None:
    torch.manual_seed(1)
    tdam = TDAM(frames=5, out_channels=4, offset_channels=4, offset_depth=1, modulated=True)
    clip = torch.randn(1, 5, 8, 8)
    _, mask = tdam.predict_offsets(clip)
    assert mask is not None and mask.shape == (1, 5 * 9, 8, 8)
    assert torch.equal(mask, torch.ones_like(mask))
    ref = torch.relu(nn.functional.conv2d(clip, tdam.weight, tdam.bias, padding=1))
    assert torch.allclose(tdam(clip), ref, atol=1e-5)


def test_deformable_block_starts_as_conv_block() -> None:
    torch.manual_seed(2)
    deform = DeformConvBlock(3, 6, "instance", deformable=2)
    plain = ConvBlock(3, 6, "instance")
    missing = plain.load_state_dict(deform.state_dict(), strict=False)
    assert all("offset_conv" in key for key in missing.unexpected_keys) and not missing.missing_keys
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(deform(x), plain(x), atol=1e-5)


def test_fresh_dgpa_is_a_plain_unet() -> None:
    """Offsets 0 and alpha 0: DGPA computes exactly what a U-Net with the same conv weights computes."""
    torch.manual_seed(3)
    dgpa = DGPA(5, 4, depth=2, norm="instance", deformable_per_block=2)
    unet = UNetCore(5, 4, 2, "instance")
    state = {k.removeprefix("core."): v for k, v in dgpa.state_dict().items() if "offset_conv" not in k}
    state = {k: v for k, v in state.items() if not k.startswith("bottleneck.")}
    unet.load_state_dict(state)
    x = torch.randn(2, 5, 16, 16)
    assert torch.allclose(dgpa(x), unet(x), atol=1e-5)


def test_position_attention_with_alpha_zero_is_identity() -> None:
    torch.manual_seed(4)
    attention = PositionAttention(16)
    for p in attention.parameters():  # random projections: only alpha = 0 may make it the identity
        nn.init.normal_(p)
    attention.alpha.data.zero_()
    x = torch.randn(2, 16, 4, 6)
    assert torch.equal(attention(x), x)
    attention.alpha.data.fill_(0.5)
    assert not torch.allclose(attention(x), x)


def test_position_attention_golden_values() -> None:
    """Zero query/key projections give uniform attention: Z = alpha * mean_i(D_i) + O at every pixel."""
    attention = PositionAttention(4, reduction=2)
    for module in (attention.query, attention.key):
        assert module.bias is not None
        nn.init.zeros_(module.weight)
        nn.init.zeros_(module.bias)
    attention.alpha.data.fill_(2.0)
    x = torch.randn(1, 4, 3, 5)
    p = attention.attention_map(x)
    assert p.shape == (1, 15, 15)
    assert torch.allclose(p, torch.full_like(p, 1 / 15))
    d = attention.value(x)
    expected = 2.0 * d.mean(dim=(2, 3), keepdim=True) + x
    assert torch.allclose(attention(x), expected, atol=1e-6)


def test_attention_map_rows_are_distributions() -> None:
    torch.manual_seed(5)
    p = PositionAttention(8).attention_map(torch.randn(3, 8, 4, 4))
    assert torch.allclose(p.sum(dim=-1), torch.ones(3, 16))
    assert (p >= 0).all()


@pytest.mark.parametrize("name", ["deunet", "deunet_d", "deunet_t"])
def test_gradient_reaches_every_offset_head(name: str) -> None:
    torch.manual_seed(6)
    model = build_model(name, base_channels=4, depth=2, offset_channels=4, offset_depth=2)
    clip = torch.randn(2, 3, 16, 16)
    DiceCELoss()(model(clip), torch.randint(0, 4, (2, 16, 16))).backward()
    heads = {k: p for k, p in model.named_parameters() if "offset_head" in k or "offset_conv" in k}
    assert heads, "the model has no offset-predicting layer"
    for key, param in heads.items():
        assert param.grad is not None and param.grad.abs().sum() > 0, key
    if name != "deunet_t":
        # The head is zero at first, so the offset U-Net behind it gets gradient from the second step on.
        first = model.fusion.offset_net.encoders[0].body[0].weight  # type: ignore[index, union-attr]
        assert first.grad is not None and first.grad.abs().sum() == 0
        torch.optim.SGD(model.parameters(), lr=0.1).step()
        model.zero_grad()
        DiceCELoss()(model(clip), torch.randint(0, 4, (2, 16, 16))).backward()
        assert first.grad is not None and first.grad.abs().sum() > 0


def test_alpha_learns() -> None:
    torch.manual_seed(7)
    model = DeUNet(base_channels=4, depth=2, offset_channels=4, offset_depth=2)
    DiceCELoss()(model(torch.randn(2, 3, 16, 16)), torch.randint(0, 4, (2, 16, 16))).backward()
    assert isinstance(model.backbone, DGPA)
    alpha = model.backbone.attention.alpha
    assert alpha.grad is not None and alpha.grad.abs().item() > 0


def test_gridnet_prior_from_labels() -> None:
    model = GridNet(base_channels=4, depth=2)
    assert model.prior.shape == (4, 1, 1)
    labels = torch.zeros(4, 8, 12, dtype=torch.long)
    labels[:, 2:6, 3:9] = 3
    labels[:2, 2:6, 3:5] = 1
    model.set_prior(labels, smoothing=1.0)
    assert model.prior.shape == (4, 8, 12)
    assert torch.allclose(model.prior.sum(dim=0), torch.ones(8, 12))
    # (count + 1) / (N + C): background corner seen 4 times, LV centre 4 times, RV strip twice
    assert model.prior[0, 0, 0].item() == pytest.approx(5 / 8)
    assert model.prior[3, 3, 6].item() == pytest.approx(5 / 8)
    assert model.prior[1, 3, 3].item() == pytest.approx(3 / 8)


def test_gridnet_registration_starts_unmoved_and_uniform_prior_changes_nothing() -> None:
    torch.manual_seed(8)
    model = GridNet(base_channels=4, depth=2).eval()
    clip = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        uniform = torch.softmax(model(clip), dim=1)
        labels = torch.randint(0, 4, (3, 16, 16))
        model.set_prior(labels)
        prior = model.registered_prior(torch.randn(1, 12, 4, 4), (16, 16))
        assert torch.allclose(prior[0], model.prior, atol=1e-6)  # zero shift, same size: the atlas itself
        shaped = torch.softmax(model(clip), dim=1)
    assert not torch.allclose(uniform, shaped)


def test_gridnet_prior_survives_a_checkpoint_round_trip() -> None:
    model = GridNet(base_channels=4, depth=2)
    model.set_prior(torch.randint(0, 4, (2, 20, 24)))
    clone = build_model("gridnet", **model.config)
    clone.load_state_dict(model.state_dict())
    assert isinstance(clone, GridNet)
    assert torch.equal(clone.prior, model.prior)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (torch.zeros(8, 8, dtype=torch.long), r"\(N, H, W\)"),
        (torch.zeros(1, 8, 8), "integer labels"),
        (torch.full((1, 8, 8), 4), r"\[0, 4\)"),
    ],
)
def test_gridnet_bad_prior_labels_raise(labels: torch.Tensor, message: str) -> None:
    with pytest.raises(InputShapeError, match=message):
        GridNet(base_channels=4, depth=2).set_prior(labels)


def test_warp_with_zero_flow_is_identity_and_integer_flow_shifts() -> None:
    image = torch.randn(2, 1, 6, 7)
    assert torch.allclose(warp(image, torch.zeros(2, 2, 6, 7)), image, atol=1e-6)
    flow = torch.zeros(2, 2, 6, 7)
    flow[:, 0] = 2.0  # dx = 2: out(y, x) = image(y, x + 2)
    assert torch.allclose(warp(image, flow)[..., :5], image[..., 2:], atol=1e-5)


def test_fresh_toflow_leaves_the_clip_unchanged() -> None:
    torch.manual_seed(9)
    model = ToFlowUNet(radius=2, base_channels=4, depth=2, flow_levels=2, flow_channels=4)
    clip = torch.randn(2, 5, 16, 16)
    assert torch.allclose(model.align(clip), clip, atol=1e-6)


def test_kunet_uses_every_frame() -> None:
    torch.manual_seed(10)
    model = build_model("kunet", radius=1, base_channels=4, depth=2).eval()
    clip = torch.randn(1, 3, 16, 16)
    for t in (0, 2):
        other = clip.clone()
        other[:, t] += 1.0
        with torch.no_grad():
            assert not torch.allclose(model(clip), model(other)), f"frame {t} is ignored"


def test_unet_middle_mode_ignores_neighbours() -> None:
    model = build_model("unet", radius=1, base_channels=4, depth=2).eval()
    clip = torch.randn(1, 3, 16, 16)
    other = clip.clone()
    other[:, 0] = 0
    with torch.no_grad():
        assert torch.equal(model(clip), model(other))


def synthetic_clip(radius: int = 1, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A beating toy heart: LV disk (3) in a MYO ring (2), an RV disk (1) beside it, noisy intensities.

    Returns the clip (1, 2r+1, size, size) and the target frame's labels (1, size, size).
    """
    g = torch.Generator().manual_seed(seed)
    coords = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    frames, labels = [], []
    for t in range(-radius, radius + 1):
        r_lv = size * (0.16 - 0.02 * t)  # contracts over the clip
        cy, cx = size / 2 + 0.5 * t, size / 2 + 2
        lab = torch.zeros(size, size, dtype=torch.long)
        d = torch.hypot(yy - cy, xx - cx)
        lab[(d >= r_lv) & (d < r_lv + size * 0.08)] = 2
        lab[d < r_lv] = 3
        lab[(torch.hypot(yy - cy, xx - (cx - size * 0.3)) < size * 0.16) & (lab == 0)] = 1
        frames.append(torch.tensor([0.1, 0.6, 0.3, 0.9])[lab] + 0.05 * torch.randn(size, size, generator=g))
        labels.append(lab)
    return torch.stack(frames)[None], labels[radius][None]


def hard_dice(logits: torch.Tensor, target: torch.Tensor) -> list[float]:
    pred = logits.argmax(dim=1)
    out = []
    for c in (1, 2, 3):
        inter = ((pred == c) & (target == c)).sum().item()
        out.append(2 * inter / ((pred == c).sum().item() + (target == c).sum().item()))
    return out


@pytest.mark.parametrize("name", ["unet", "deunet"])
def test_overfits_one_clip(name: str) -> None:
    """30 Adam steps on one clip reach Dice > 0.9 on every structure (starting from chance)."""
    torch.manual_seed(0)
    clip, target = synthetic_clip()
    model = build_model(name, base_channels=16, depth=3)
    loss_fn = DiceCELoss()
    with torch.no_grad():
        before = hard_dice(model(clip), target)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = loss_fn(model(clip), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        after = hard_dice(model(clip), target)
    assert min(before) < 0.5, before
    assert min(after) > 0.9, (after, losses[::5])
    assert losses[-1] < 0.5 * losses[0]
