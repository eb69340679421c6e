"""The networks of the DeU-Net paper's Table 1 behind one registry.

Every model maps a clip (B, 2r+1, H, W), target frame in the middle, to logits (B, 4, H, W) for
background, RV, MYO, LV. Build one with ``build_model(name, **kwargs)``; ``available_models()`` lists names.
"""

from pipeline.models.base import InputShapeError, ModelConfigError, SegmentationModel, class_map
from pipeline.models.losses import DiceCELoss, soft_dice_per_class
from pipeline.models.registry import MODEL_REGISTRY, available_models, build_model

__all__ = [
    "MODEL_REGISTRY",
    "DiceCELoss",
    "InputShapeError",
    "ModelConfigError",
    "SegmentationModel",
    "available_models",
    "build_model",
    "class_map",
    "soft_dice_per_class",
]
