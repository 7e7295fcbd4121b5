"""The `vamp` command line (placeholder until the gateway runtime lands)."""
import sys


def main(argv=None) -> int:
    print("vamp: not yet implemented", file=sys.stderr)
    return 1
