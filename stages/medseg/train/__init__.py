"""Training: the loop, its data, several processes, and the train stage's work.

- ``datasets``: ``ArraySet`` (decoded once, in memory), ``load_training_data`` for a round, ``Batches``.
- ``loop``: ``fit``, one epoch, validation (pooled Dice), optimiser and schedule, early stopping.
- ``semi``: semi-supervised training on the unlabelled train images (FixMatch, mean teacher); ``strong``: their
  strong view.
- ``distributed``: data-parallel training over processes and machines (DDP via torchrun).
- ``run``: ``train_dataset``, every round of a dataset: checkpoints, history, summary, progress pictures.
"""
