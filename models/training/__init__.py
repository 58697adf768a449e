"""Pruning-aware training: models that keep their accuracy when pruned after deployment.

Strategies (:mod:`models.training.strategies`): ``baseline`` (ordinary training, then importance-ordered
pruning after the fact), ``sandwich`` (full + smallest + ``k`` random per-stage level vectors every step)
and ``sandwich-distill`` (the same with in-place distillation from the full-width output).  Two named
hyper-parameter sets per strategy live in ``models/configs/<strategy>-<set>.toml``
(:mod:`models.training.config`).

Modules: :mod:`~models.training.config` (hyper-parameter files), :mod:`~models.training.data` (digits,
image folders, labelled CSVs), :mod:`~models.training.network` (tiny ViT, heads, nesting),
:mod:`~models.training.strategies` (one step per strategy), :mod:`~models.training.loop` (seeded,
resumable runs writing ``model.pt`` + ``train.json``) and :mod:`~models.training.curves` (accuracy per
uniform level and per-stage vectors, into a profile).  Command line: ``edgeprune-train``
(:mod:`models.train_cli`) and ``python -m models.training.curves``.
"""
