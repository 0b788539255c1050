"""Screening worker: settings, decoding, Celery app, watcher, inference and the CLI."""
