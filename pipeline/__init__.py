"""Cardiac cine MRI segmentation pipeline around DeU-Net (LV, MYO, RV on ACDC-layout data)."""

__version__ = "0.1.0"
