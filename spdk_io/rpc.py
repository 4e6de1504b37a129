"""SPDK's JSON-RPC methods, from Python in the same process, and for outside tools.

``await rpc.call("bdev_malloc_create", {...})`` reaches every method SPDK has
registered (bdev_*, nvmf_*, bdev_lvol_*, framework_*, ...) and returns its
JSON result, or raises :class:`~spdk_io.errors.RpcError` with SPDK's code and
message.

SPDK has no in-process entry point into its RPC dispatcher, so spdk_io runs a
private SPDK RPC server on a unix socket in a fresh 0700 directory and talks
to it over a non-blocking socket.  Both ends are pumped by one poller on the
app thread that exists only while calls are in flight, so an idle process pays
nothing.  :func:`serve` starts a server on a path of your choice (socket mode
0600) so that SPDK's own ``rpc.py`` can manage this process.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spdk_io import _generated as g
from spdk_io.errors import RpcError, SpdkError
from spdk_io.loop import Op
from spdk_io.thread import Poller, current_thread

__all__ = ["RpcServer", "call", "serve"]

JSON = Any

#: How often a served socket is checked for new requests (SPDK's own apps use 4 ms).
SERVE_PERIOD_US = 1000


class RpcServer:
    """An SPDK JSON-RPC server listening on a unix socket, polled on the app thread."""

    def __init__(self, path: str | Path, *, period_us: int = SERVE_PERIOD_US) -> None:
        self.path = Path(path)
        if len(os.fsencode(self.path)) >= 108:
            raise ValueError(f"unix socket path too long: {self.path}")
        if self.path.exists():
            raise FileExistsError(f"{self.path} exists; remove it or pick another path")
        self.thread = current_thread()
        old = os.umask(0o177)  # the socket is created 0600, never briefly wider
        try:
            self._ptr: Any = g.spdk_rpc_server_listen(os.fsencode(self.path))
        finally:
            os.umask(old)
        if not self._ptr:
            raise SpdkError(errno.EADDRINUSE, "spdk_rpc_server_listen", str(self.path))
        os.chmod(self.path, 0o600)
        self._poller: Poller | None = None
        if period_us:
            self._poller = Poller(self.accept, period_us=period_us, name="rpc_server")
        _servers.append(self)

    def accept(self) -> bool:
        """Accept connections and serve requests that are waiting (one poll)."""
        if self._ptr:
            g.spdk_rpc_server_accept(self._ptr)
        return False

    def close(self) -> None:
        """Stop listening and remove the socket.  Idempotent."""
        if not self._ptr:
            return
        self.thread.check_owner()
        if self._poller is not None:
            self._poller.unregister()
        g.spdk_rpc_server_close(self._ptr)
        self._ptr = None
        if self in _servers:
            _servers.remove(self)

    def __enter__(self) -> RpcServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(path: str | Path) -> RpcServer:
    """Serve SPDK's JSON-RPC on the unix socket ``path`` (mode 0600) until closed."""
    return RpcServer(path)


_servers: list[RpcServer] = []


class _Client:
    """The private server and our connection to it, pumped while calls are in flight."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="spdk_io-rpc-")  # mode 0700
        self.server = RpcServer(Path(self._dir) / "rpc.sock", period_us=0)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):  # completes when the server accepts
            self.sock.connect(str(self.server.path))
        self.out = bytearray()
        self.inbuf = bytearray()
        self.pending: dict[int, tuple[str, Op[JSON]]] = {}
        self.ids = itertools.count(1)
        self.poller: Poller | None = None
        self.decoder = json.JSONDecoder()

    def submit(self, method: str, params: JSON) -> Op[JSON]:
        rid = next(self.ids)
        request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": rid}
        if params is not None:
            request["params"] = params
        op: Op[JSON] = Op(f"rpc {method}")
        self.out += json.dumps(request).encode()
        self.pending[rid] = (method, op)
        if self.poller is None:
            self.poller = Poller(self.pump, name="rpc_client")
        elif self.poller.paused:
            self.poller.resume()
        return op

    def pump(self) -> bool:
        busy = False
        if self.out:
            try:
                sent = self.sock.send(self.out)
                del self.out[:sent]
                busy = True
            except BlockingIOError:
                pass
        self.server.accept()
        while True:
            try:
                chunk = self.sock.recv(1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                self._fail_all(ConnectionError("SPDK closed the RPC connection"))
                break
            self.inbuf += chunk
            busy = True
        if self.inbuf:
            self._parse()
        if not self.pending and not self.out and self.poller is not None:
            self.poller.pause()
        return busy

    def _parse(self) -> None:
        try:
            text = self.inbuf.decode()
        except UnicodeDecodeError:
            return  # a multi-byte character is split across reads: wait for the rest
        pos = 0
        while True:
            while pos < len(text) and text[pos] in " \t\r\n":
                pos += 1
            if pos >= len(text):
                break
            try:
                obj, pos = self.decoder.raw_decode(text, pos)
            except json.JSONDecodeError:
                break
            self._deliver(obj)
        self.inbuf = bytearray(text[pos:].encode())

    def _deliver(self, response: JSON) -> None:
        rid = response.get("id") if isinstance(response, dict) else None
        entry = self.pending.pop(rid, None) if isinstance(rid, int) else None
        if entry is None:
            return
        method, op = entry
        if op.done():
            return
        if "error" in response:
            err = response["error"]
            op.set_exception(
                RpcError(
                    method,
                    int(err.get("code", -32603)),
                    str(err.get("message", "")),
                    err.get("data"),
                )
            )
        else:
            op.set_result(response.get("result"))

    def _fail_all(self, exc: BaseException) -> None:
        pending, self.pending = self.pending, {}
        for _, op in pending.values():
            if not op.done():
                op.set_exception(exc)

    def close(self) -> None:
        self._fail_all(ConnectionError("SPDK is shutting down"))
        if self.poller is not None:
            self.poller.unregister()
        self.sock.close()
        self.server.close()
        shutil.rmtree(self._dir, ignore_errors=True)


_client: _Client | None = None


def call(method: str, params: Mapping[str, Any] | list[Any] | None = None) -> Op[JSON]:
    """Call the SPDK RPC ``method`` with ``params``; await it for the result.

    Must be called on the app thread (the one :func:`spdk_io.run` drives).
    """
    global _client
    if not isinstance(method, str) or not method:
        raise ValueError(f"RPC method must be a non-empty string, got {method!r}")
    thread = current_thread()
    if _client is None:
        app = g.spdk_thread_get_app_thread()
        if not app or thread.id != g.spdk_thread_get_id(app):
            raise RuntimeError("spdk_io.rpc.call must run on the app thread")
        _client = _Client()
    else:
        _client.server.thread.check_owner()
    if params is not None and not isinstance(params, Mapping | list):
        raise TypeError(f"RPC params must be a dict or a list, got {type(params).__name__}")
    return _client.submit(method, dict(params) if isinstance(params, Mapping) else params)


def _shutdown() -> None:
    """Close every server and the private client (Env teardown)."""
    global _client
    if _client is not None:
        _client.close()
        _client = None
    for server in list(_servers):
        server.close()
