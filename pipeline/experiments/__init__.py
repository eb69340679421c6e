"""The experiment API: train sets of (model, fold) runs and score them, the way the stages and every
benchmark do.

- :mod:`.folds`: a split's folds as patient lists (fold -1: every patient) and the fold loop
  (:func:`~pipeline.experiments.folds.train_folds`).
- :mod:`.scoring`: each fold's model on its held-out patients (:func:`~pipeline.experiments.scoring.score_folds`),
  pooled and per-fold summaries, and what the evaluate stage writes as ``metrics.json``.
- :mod:`.tables`: Table 1 and its relatives as markdown: per post-processing, per fold, per run.
- :mod:`.workspace`: a folder of named experiments (``<tag>/<model>/fold<k>/``) with one clip store per
  preprocessing and its split: what the cross-validation benchmarks share.
- :mod:`.params`: params.yaml with a profile and ``section.key=value`` overrides on top.
- :mod:`.phantom`: a small model trained on phantom heart crops in half a minute, and its Dice.
- :mod:`.speed`: timings shared by the speed benchmarks (whole-cine inference, raw training steps, the
  deformable convolution, import times); :mod:`.deform_check`: whether the deformable convolution's two
  paths agree on a device; :mod:`.device_bundle`: acdc-roi packed small for a GPU machine that gets only
  the working tree (the GPU check); :mod:`.timed_training`: training against a wall-clock deadline that
  stops at the next epoch and keeps the finished epochs (the GPU check's timed runs).

It sits above training, inference and evaluation; the stages, the Optuna study (pipeline.tuning) and the
benchmarks call it, and nothing below it imports it.
"""
