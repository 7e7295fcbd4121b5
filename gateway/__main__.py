"""`python -m gateway ...` runs the gateway's commands of `vamp` alone: `gateway`, `gateways …`, `apply -f` with
a gateways file, and `worker` (the worker processes of `vamp gateway --workers N` are started this way). Same
options, output and exit codes as under `vamp`, which is `python -m control` (`control.cli`): the gateway
imports neither the control plane nor the load tester, so their commands are not here."""
import sys

from .cli import main

sys.exit(main())
