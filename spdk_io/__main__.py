"""Command line: ``python -m spdk_io perf ...`` (see :mod:`spdk_io.perf`) and
``python -m spdk_io serve ...`` (see :mod:`spdk_io.serve`).

Exit status: the command's own, 2 for an unknown command (one line on
stderr), 130 on Ctrl-C.
"""

from __future__ import annotations

import sys

USAGE = (
    "usage: python -m spdk_io perf|serve [options]   (perf --help, serve --help for the options)"
)


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:  # e.g. while SPDK's libraries load, before perf's own handler
        print("spdk_io: interrupted", file=sys.stderr)
        return 130


def _main(args: list[str]) -> int:
    if not args:
        print(USAGE, file=sys.stderr)
        return 2
    if args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if args[0] == "perf":
        from spdk_io.perf import main as perf_main

        return perf_main(args[1:])
    if args[0] == "serve":
        from spdk_io.serve import main as serve_main

        return serve_main(args[1:])
    print(f"spdk_io: unknown command {args[0]!r}; try: python -m spdk_io --help", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
