"""`python -m control ...` is the `vamp` command (`control.cli`, the product's one entry point)."""
import sys

from .cli import main

sys.exit(main())
