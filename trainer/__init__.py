"""Trainer: the transfer model, training, evaluation, artifacts, the gate, nightly runs."""
