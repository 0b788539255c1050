"""`python -m worker.cli`: the same as the `cxr-screen` command."""

from worker.cli.main import main

main()
