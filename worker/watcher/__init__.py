"""The inbox watcher: every complete file dropped in is recorded and queued exactly once."""
