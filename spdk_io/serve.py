"""``python -m spdk_io serve``: host bdevs and an NVMe-oF target from a JSON config.

The config is SPDK's JSON config format, as ``nvmf_tgt --json`` takes it; its
``"nvmf"`` section configures SPDK's default NVMe-oF target (as in ``nvmf_tgt``).
Once everything is up it prints ``READY`` on stdout and serves until SIGINT or
SIGTERM, then tears SPDK down in order.  With ``--rpc-socket PATH`` it also serves
SPDK's JSON-RPC there, so SPDK's ``rpc.py -s PATH`` manages it.  With
``--metrics-port N`` it serves :mod:`spdk_io.stats` for Prometheus to scrape at
``http://127.0.0.1:N/metrics`` (``--metrics-address``; a fresh snapshot every
``--metrics-period`` seconds; needs the ``spdk-io[metrics]`` extra).

Exit status: 0 after SIGINT/SIGTERM, 2 for bad arguments or a config SPDK refuses
(one line on stderr).

    python -m spdk_io serve --json-config nvmf.json --rpc-socket /tmp/spdk_io.sock
    python -m spdk_io serve --json-config nvmf.json --metrics-port 9100
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spdk_io import rpc
from spdk_io._cli import Parser, parse
from spdk_io._validate import FOREVER, duration, integer, text
from spdk_io.env import run
from spdk_io.errors import SpdkError
from spdk_io.loop import sleep, spawn

__all__ = ["Metrics", "main", "serve"]

_log = logging.getLogger("spdk_io")

#: Memory of the served SPDK environment (``--mem-size``), MiB.
DEFAULT_MEM_MIB = 1024


@dataclass(frozen=True)
class Metrics:
    """Where to serve metrics for Prometheus (``port`` 1..65535 on ``address``), and how
    often to take a fresh snapshot (``period``, seconds)."""

    port: int
    address: str = "127.0.0.1"
    period: float = 1.0

    def __post_init__(self) -> None:
        integer(self.port, "metrics port", 1, 65535)
        text(self.address, "metrics address")
        if duration(self.period, "metrics period") <= 0:
            raise ValueError(f"metrics period must be > 0, got {self.period!r}")


def _start_metrics(metrics: Metrics) -> tuple[Any, Any]:
    """The HTTP server (prometheus_client's, on its own thread) and the collector."""
    from prometheus_client import CollectorRegistry, start_http_server

    from spdk_io.stats.prometheus import SnapshotCollector

    collector = SnapshotCollector()
    registry = CollectorRegistry()
    registry.register(collector)
    server, _thread = start_http_server(metrics.port, metrics.address, registry=registry)
    return server, collector


async def _serve(rpc_socket: str | None, metrics: Metrics | None = None) -> None:
    server = rpc.serve(rpc_socket) if rpc_socket is not None else None
    http: Any = None
    try:
        if metrics is not None:
            http, collector = _start_metrics(metrics)
            from spdk_io.stats import snapshot

            try:
                collector.update(await snapshot())  # the first scrape already has data
            except Exception:  # as keep_fresh does: the next period tries again
                _log.warning("serve: taking the first metrics snapshot failed", exc_info=True)
            spawn(collector.keep_fresh(metrics.period), "metrics snapshots")
        print("READY", flush=True)
        await sleep(FOREVER)
    finally:
        if http is not None:
            http.shutdown()
            http.server_close()
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
    metrics: Metrics | None = None,
) -> None:
    """Bring SPDK up with ``config``, serve until SIGINT/SIGTERM, tear down.  With
    ``metrics``, also serve :mod:`spdk_io.stats` for Prometheus meanwhile.

    The interrupt arrives as ``KeyboardInterrupt`` after teardown; :func:`main` turns it
    into exit status 0.
    """
    previous = signal.signal(signal.SIGTERM, _forward_sigterm)
    try:
        run(
            _serve(rpc_socket, metrics),
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
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics at http://ADDRESS:PORT/metrics (spdk-io[metrics])",
    )
    p.add_argument("--metrics-address", default="127.0.0.1", help="the metrics server's address")
    p.add_argument("--metrics-period", type=float, default=1.0, help="seconds between snapshots")
    return p


def _metrics(args: argparse.Namespace) -> Metrics | None:
    if args.metrics_port is None:
        return None
    try:
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        raise ValueError(
            "--metrics-port needs prometheus_client: pip install 'spdk-io[metrics]'"
        ) from exc
    return Metrics(args.metrics_port, args.metrics_address, args.metrics_period)


def main(argv: list[str] | None = None) -> int:
    """The CLI: 0 after SIGINT/SIGTERM, 2 (one line on stderr) for bad arguments."""
    args = parse(_parser(), argv, "serve")
    if isinstance(args, int):
        return args
    try:
        metrics = _metrics(args)
    except (TypeError, ValueError) as exc:
        print(f"serve: {exc}", file=sys.stderr)
        return 2
    try:
        serve(
            args.json_config,
            args.rpc_socket,
            core_mask=args.core_mask,
            mem_size_mb=args.mem_size,
            metrics=metrics,
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
