"""`python -m cxr_screen.cli`: the same as the `cxr-screen` command."""

from cxr_screen.cli.main import main

main()
