"""The checkpoint: the contract between training and inference.

- ``io``: its format (weights, model name and arguments, preprocessing, training state, versions), written
  atomically and read with ``weights_only=True``, checked for compatibility, and the model rebuilt from it
  (imports torch).
- ``preprocess``: the preprocessing it records, typed (no torch).
- ``view``: the field of view training saw, which inference reads back to frame its input (no torch).

Training and inference both build on this package; neither imports the other. Nothing is imported here,
so the torch-free predict (ONNX Runtime) can read ``preprocess`` and ``view`` without loading torch.
"""
