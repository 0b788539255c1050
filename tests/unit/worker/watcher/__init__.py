"""Unit tests of the inbox watcher."""
