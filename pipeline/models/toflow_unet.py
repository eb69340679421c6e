"""ToFlow U-Net (Table 1's variant replacing TDAM by task-oriented flow, Xue et al. 2019).

A small SpyNet-style pyramid estimates the motion from the target frame to each neighbour; every
neighbour is warped onto the target with ``grid_sample``; a 3x3 convolution fuses the aligned clip into
features; a plain U-Net segments them. The flow is trained end to end by the segmentation loss (that is
what "task-oriented" means); its last layers are zero-initialised, so training starts with no motion.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.models.base import SegmentationModel, check_int
from pipeline.models.blocks import UNetCore


def warp(image: Tensor, flow: Tensor) -> Tensor:
    """Backward warp: out(p) = image(p + flow(p)), bilinear, border padding.

    image (N, C, H, W); flow (N, 2, H, W) in pixels as (dx, dy). Returns (N, C, H, W).
    """
    _, _, h, w = image.shape
    ys = torch.arange(h, device=image.device, dtype=flow.dtype).view(1, h, 1)
    xs = torch.arange(w, device=image.device, dtype=flow.dtype).view(1, 1, w)
    x = xs + flow[:, 0]
    y = ys + flow[:, 1]
    grid = torch.stack(((2 * x + 1) / w - 1, (2 * y + 1) / h - 1), dim=-1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)


class PyramidFlow(nn.Module):
    """Coarse-to-fine flow from ``target`` to ``reference``, both (N, 1, H, W) -> flow (N, 2, H, W) in pixels.

    At each of ``levels`` scales a small CNN sees (target, reference warped by the current flow, flow)
    and adds a residual flow; the flow is doubled when going up a scale.
    """

    def __init__(self, levels: int = 3, channels: int = 16) -> None:
        super().__init__()
        self.levels = check_int("flow_levels", levels, minimum=1)
        self.nets = nn.ModuleList()
        for _ in range(levels):
            net = nn.Sequential(
                nn.Conv2d(4, channels, 5, padding=2),
                nn.ReLU(inplace=True),
                nn.Conv2d(channels, channels, 5, padding=2),
                nn.ReLU(inplace=True),
                nn.Conv2d(channels, 2, 5, padding=2),
            )
            last = net[-1]
            assert isinstance(last, nn.Conv2d) and last.bias is not None
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.nets.append(net)

    def forward(self, target: Tensor, reference: Tensor) -> Tensor:
        pyramid = [(target, reference)]
        for _ in range(self.levels - 1):
            t, r = pyramid[-1]
            pyramid.append((F.avg_pool2d(t, 2), F.avg_pool2d(r, 2)))
        flow = target.new_zeros(target.shape[0], 2, *pyramid[-1][0].shape[2:])
        for level in reversed(range(self.levels)):
            t, r = pyramid[level]
            if flow.shape[2:] != t.shape[2:]:
                flow = 2 * F.interpolate(flow, size=t.shape[2:], mode="bilinear", align_corners=False)
            flow = flow + self.nets[level](torch.cat([t, warp(r, flow), flow], dim=1))
        return flow


class ToFlowUNet(SegmentationModel):
    """(B, 2r+1, H, W) -> (B, num_classes, H, W); H, W multiples of 2**max(depth, flow_levels - 1).

    Args:
        flow_levels / flow_channels: pyramid scales and width of each level's flow CNN.
    """

    name = "toflow_unet"

    def __init__(
        self,
        radius: int = 1,
        num_classes: int = 4,
        base_channels: int = 16,
        depth: int = 4,
        norm: str = "instance",
        input_size: int | tuple[int, int] | None = None,
        flow_levels: int = 3,
        flow_channels: int = 16,
    ) -> None:
        check_int("depth", depth, minimum=1)
        check_int("flow_levels", flow_levels, minimum=1, maximum=6)
        super().__init__(input_multiple=2 ** max(depth, flow_levels - 1))
        check_int("flow_channels", flow_channels, minimum=1)
        self.flow = PyramidFlow(flow_levels, flow_channels)
        self.fuse = nn.Sequential(
            nn.Conv2d(self.in_frames, base_channels, 3, padding=1), nn.ReLU(inplace=True)
        )
        self.core = UNetCore(base_channels, base_channels, depth, norm)
        self.head = nn.Conv2d(base_channels, num_classes, 1)

    def align(self, clip: Tensor) -> Tensor:
        """Warp every neighbour onto the target frame: (B, T, H, W) -> (B, T, H, W), target unchanged."""
        b, t, h, w = clip.shape
        if t == 1:
            return clip
        r = self.radius
        neighbours = torch.cat([clip[:, :r], clip[:, r + 1 :]], dim=1).reshape(b * (t - 1), 1, h, w)
        target = clip[:, r : r + 1].repeat_interleave(t - 1, dim=0)
        warped = warp(neighbours, self.flow(target, neighbours)).view(b, t - 1, h, w)
        return torch.cat([warped[:, :r], clip[:, r : r + 1], warped[:, r:]], dim=1)

    def _forward(self, clip: Tensor) -> Tensor:
        return self.head(self.core(self.fuse(self.align(clip))))
