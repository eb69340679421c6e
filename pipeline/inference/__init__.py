"""Inference: segment whole cines with a trained model, on the original voxel grid; ``deunet predict``
(:mod:`pipeline.inference.predict_cli`) writes their clinical read-out and report."""
