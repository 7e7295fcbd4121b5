"""`python -m control ...` is the `vamp` command."""
import sys

from .cli import main

sys.exit(main())
