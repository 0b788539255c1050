"""Trainer: the transfer model, labelled-folder training, evaluation, registry, nightly runs."""
