"""Training: everything that moves weights.

``args`` (the run settings), ``loop`` (setup, iterate, validate, checkpoint), ``step`` (one
optimisation step over every receiver), ``checkpoint`` (atomic resumable state), ``losses``,
``hidden`` (the hidden-state loss), ``teacher`` (the KD teacher-logit cache), ``grads`` (micro-batches,
per-part gradients, activation checkpointing), ``nonfinite`` (the non-finite update guard), ``optim``
(parameter groups and the learning-rate schedule), ``pretrain`` (encoder pretraining), ``text_tuning``
(the tuned text ceilings) and ``extend`` (a new receiver on a trained wire). Training builds on
evaluation (validation runs the evaluation path); evaluation never imports training.
"""
