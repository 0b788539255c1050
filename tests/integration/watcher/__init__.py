"""The watcher with a real observer, real files, real databases and brokers."""
