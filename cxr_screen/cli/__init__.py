"""The `cxr-screen` command line."""
