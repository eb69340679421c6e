"""Inference: segment whole cines with a trained model, on the original voxel grid."""
