"""``python -m spdk_io serve``: host bdevs and an NVMe-oF target from a JSON config.

The config is SPDK's JSON config format, as ``nvmf_tgt --json`` takes it; its
``"nvmf"`` section configures SPDK's default NVMe-oF target (as in ``nvmf_tgt``).
Once everything is up it prints ``READY`` on stdout and serves until SIGINT or
SIGTERM, then tears SPDK down in order.  With ``--rpc-socket PATH`` it also serves
SPDK's JSON-RPC there, so SPDK's ``rpc.py -s PATH`` manages it.

Exit status: 0 after SIGINT/SIGTERM, 2 for bad arguments or a config SPDK refuses
(one line on stderr).

    python -m spdk_io serve --json-config nvmf.json --rpc-socket /tmp/spdk_io.sock
"""

from __future__ import annotations

import argparse
import signal
import sys
import types
from pathlib import Path

from spdk_io import rpc
from spdk_io._cli import Parser, parse
from spdk_io._validate import FOREVER
from spdk_io.env import run
from spdk_io.errors import SpdkError
from spdk_io.loop import sleep

__all__ = ["main", "serve"]

#: Memory of the served SPDK environment (``--mem-size``), MiB.
DEFAULT_MEM_MIB = 1024


async def _serve(rpc_socket: str | None) -> None:
    server = rpc.serve(rpc_socket) if rpc_socket is not None else None
    print("READY", flush=True)
    try:
        await sleep(FOREVER)
    finally:
        if server is not None:
            server.close()


def _forward_sigterm(signum: int, frame: types.FrameType | None) -> None:
    """SIGTERM does what SIGINT does now (the loop's handler: an orderly stop)."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)


def serve(
    config: str,
    rpc_socket: str | None = None,
    *,
    core_mask: str = "0x1",
    mem_size_mb: int = DEFAULT_MEM_MIB,
) -> None:
    """Bring SPDK up with ``config``, serve until SIGINT/SIGTERM, tear down.

    The interrupt arrives as ``KeyboardInterrupt`` after teardown; :func:`main` turns it
    into exit status 0.
    """
    previous = signal.signal(signal.SIGTERM, _forward_sigterm)
    try:
        run(
            _serve(rpc_socket),
            config=Path(config),
            name="spdk_io_serve",
            core_mask=core_mask,
            mem_size_mb=mem_size_mb,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m spdk_io serve", description="host bdevs and NVMe-oF from a config")
    p.add_argument("--json-config", required=True, help="SPDK JSON config (as nvmf_tgt --json)")
    p.add_argument("--rpc-socket", default=None, help="serve SPDK's JSON-RPC on this unix socket")
    p.add_argument("-m", "--core-mask", default="0x1", help="cores SPDK may use (default 0x1)")
    p.add_argument("-s", "--mem-size", type=int, default=DEFAULT_MEM_MIB, help="memory, MiB")
    return p


def main(argv: list[str] | None = None) -> int:
    """The CLI: 0 after SIGINT/SIGTERM, 2 (one line on stderr) for bad arguments."""
    args = parse(_parser(), argv, "serve")
    if isinstance(args, int):
        return args
    try:
        serve(
            args.json_config, args.rpc_socket, core_mask=args.core_mask, mem_size_mb=args.mem_size
        )
    except KeyboardInterrupt:
        print("serve: stopped", file=sys.stderr)
        return 0
    except (TypeError, ValueError, OSError) as exc:
        if isinstance(exc, SpdkError) and not exc.op.startswith("spdk_subsystem_load"):
            raise
        print(f"serve: {exc}", file=sys.stderr)
        return 2
    return 0
