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

Guarantees:

* A request SPDK's JSON-RPC server could not parse is never sent: it would
  make SPDK close the connection.  :func:`call` refuses it first, with a
  ``TypeError``/``ValueError`` that names the offending part of ``params`` and
  the limit (:data:`MAX_REQUEST_BYTES`, :data:`MAX_VALUES`,
  :data:`MAX_PARAMS_DEPTH`, 64-bit integers, finite floats, valid Unicode).
* A lost connection fails the calls in flight with :class:`ConnectionError`;
  no socket error ever escapes the poller, and the next call reconnects (with
  a new private server if the old one is gone).
* A private socket directory left behind by a process that was killed is
  removed by the next process that starts a client (only 0700 directories of
  this user whose process is gone and whose server lock is free).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import json
import math
import os
import re
import shutil
import socket
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spdk_io import _generated as g
from spdk_io import _validate
from spdk_io.env import main_interpreter_only
from spdk_io.errors import RpcError, SpdkError, WrongThreadError
from spdk_io.loop import Op
from spdk_io.resource import Resource
from spdk_io.thread import MAX_PERIOD_US, Poller, SpdkThread, current_thread

__all__ = [
    "MAX_PARAMS_DEPTH",
    "MAX_REQUEST_BYTES",
    "MAX_VALUES",
    "RpcServer",
    "call",
    "encode_request",
    "serve",
    "shutdown",
]

JSON = Any

#: How often a served socket is checked for new requests (SPDK's own apps use 4 ms).
SERVE_PERIOD_US = 1000

# SPDK v26.05's JSON-RPC server limits.  A request past any of them makes SPDK
# answer "Parse error" and close the connection (lib/jsonrpc/jsonrpc_server.c,
# jsonrpc_server_tcp.c), so the client refuses it before sending.
#: SPDK_JSONRPC_RECV_BUF_SIZE (lib/jsonrpc/jsonrpc_internal.h): one request must fit in
#: the server's receive buffer; a fuller buffer reads as a closed connection.
MAX_REQUEST_BYTES = 256 * 1024
#: SPDK_JSONRPC_MAX_VALUES: JSON values in one request, counting every scalar, every
#: object key and both ends of every object and array, the request envelope included.
MAX_VALUES = 8192
#: SPDK_JSON_MAX_NESTING_DEPTH (lib/json/json_parse.c) is 64 containers including the
#: request object itself, which leaves 63 levels for ``params``.
MAX_PARAMS_DEPTH = 63
#: SPDK decodes JSON integers into at most 64 bits (int32 and uint8..uint64 decoders).
INT_MIN = -(1 << 63)
INT_MAX = (1 << 64) - 1
#: The longest unix socket path (``sun_path`` is 108 bytes with the terminating NUL).
MAX_SOCKET_PATH = 107
#: SPDK's largest response (SPDK_JSONRPC_SEND_BUF_SIZE_MAX) is 32 MiB; an answer line
#: longer than this is not SPDK talking.
_MAX_ANSWER_BYTES = 64 << 20
# Values in the envelope {"jsonrpc":"2.0","method":M,"id":N[,"params":P]}: the object's
# two ends, three names with their values, and the "params" name.
_ENVELOPE_VALUES = 9


def _where(path: str) -> str:
    return f"params{path}"


def _check_params(params: JSON, method_bytes: int) -> None:
    """Raise unless ``params`` encodes to JSON SPDK's server parses (see the limits above).

    Walks the value iteratively and stops at the first problem, so a huge or
    circular value costs little and never recurses.
    """
    values = _ENVELOPE_VALUES
    # A lower bound of the encoded size, to stop early on huge values; the exact
    # size is checked once encoded.  The envelope's text around method and params:
    size = method_bytes + 40
    # (value, where it is, container depth of the value itself)
    stack: list[tuple[Any, str, int]] = [(params, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        values += 1
        if values > MAX_VALUES:
            raise ValueError(_too_many(path))
        if value is None or isinstance(value, bool):
            size += 4
        elif isinstance(value, int):
            if not INT_MIN <= value <= INT_MAX:
                raise ValueError(
                    f"{_where(path)}: integer out of SPDK's 64-bit range [{INT_MIN}, {INT_MAX}]"
                )
            size += 1
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(
                    f"{_where(path)} is {value!r}: JSON has no nan or inf, SPDK cannot parse it"
                )
            size += 3
        elif isinstance(value, str):
            size += _check_text(value, f"{_where(path)}: string") + 2
        elif isinstance(value, dict | list | tuple):
            if depth > MAX_PARAMS_DEPTH:
                raise ValueError(
                    f"{_where(path)}: nesting deeper than SPDK's limit of "
                    f"{MAX_PARAMS_DEPTH} levels in params (SPDK_JSON_MAX_NESTING_DEPTH=64 "
                    "with the request), or the value is circular"
                )
            values += 1  # the closing bracket
            size += 2 + max(len(value) - 1, 0)  # brackets and commas
            # Each item is at least one value (and each key one more): refuse a huge
            # container before walking it.
            if values + len(value) * (2 if isinstance(value, dict) else 1) > MAX_VALUES:
                raise ValueError(_too_many(path))
            if isinstance(value, dict):
                for key, item in value.items():
                    if not isinstance(key, str):
                        raise TypeError(
                            f"{_where(path)}: object key {key!r} is a {type(key).__name__}; "
                            "JSON object keys must be str"
                        )
                    values += 1
                    size += _check_text(key, f"{_where(path)}: key") + 3
                    stack.append((item, f"{path}[{key!r}]", depth + 1))
            else:
                for i, item in enumerate(value):
                    stack.append((item, f"{path}[{i}]", depth + 1))
        else:
            raise TypeError(
                f"{_where(path)} is a {type(value).__name__}, which JSON cannot carry "
                "(use dict, list, str, int, float, bool or None)"
            )
        if size > MAX_REQUEST_BYTES:
            raise ValueError(_too_big(path, size))


def _check_text(value: str, what: str) -> int:
    """The bytes ``value`` takes at least once encoded; refuses unpaired surrogates."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{what} {value[:40]!r} holds an unpaired surrogate "
            f"({exc.reason}); SPDK accepts only valid Unicode"
        ) from None
    return len(value)


def _too_many(path: str) -> str:
    return (
        f"{_where(path)}: the request has more than {MAX_VALUES} JSON values "
        "(SPDK_JSONRPC_MAX_VALUES: every scalar, key and container end counts)"
    )


def _too_big(path: str, size: int) -> str:
    return (
        f"{_where(path)}: the request takes more than {MAX_REQUEST_BYTES} bytes "
        f"(at least {size}), the size of SPDK's receive buffer (SPDK_JSONRPC_RECV_BUF_SIZE)"
    )


def encode_request(method: str, params: JSON, rid: int) -> bytes:
    """The request as bytes SPDK's JSON-RPC server parses, or ``TypeError``/``ValueError``.

    Non-ASCII text travels as ``\\u`` escapes: SPDK's parser takes a UTF-8
    character split across two socket reads for invalid input.
    """
    _validate.text(method, "RPC method")
    _check_text(method, "RPC method")
    request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": rid}
    if params is not None:
        _check_params(params, len(method))
        request["params"] = params
    data = json.dumps(request, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    encoded = data.encode("ascii")
    if len(encoded) > MAX_REQUEST_BYTES:
        raise ValueError(_too_big("", len(encoded)))
    return encoded


def _on_app_thread(what: str) -> SpdkThread:
    """The current SPDK thread if it is SPDK's app thread, else :class:`WrongThreadError`."""
    try:
        thread = current_thread()
    except RuntimeError:
        thread = None
    if thread is not None:
        app = g.spdk_thread_get_app_thread()
        if app and thread.id == g.spdk_thread_get_id(app):
            return thread
    raise WrongThreadError(
        f"{what} must run on SPDK's app thread (the one spdk_io.run drives); "
        "reach it from other threads with ThreadHandle.call"
    )


def _socket_path(path: object) -> Path:
    """``path`` checked as a place for a new unix socket: type, length, directory, occupant."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
    raw = os.fspath(path)
    if not isinstance(raw, str):
        raise TypeError(f"path must be a str path, not {type(raw).__name__}")
    _validate.text(raw, "path")
    encoded = os.fsencode(raw)
    if len(encoded) > MAX_SOCKET_PATH:
        raise ValueError(
            f"path is {len(encoded)} bytes; a unix socket path holds at most "
            f"{MAX_SOCKET_PATH}: {raw}"
        )
    p = Path(raw)
    parent = p.parent
    if not parent.exists():
        raise FileNotFoundError(errno.ENOENT, f"directory {parent} does not exist", str(parent))
    if not parent.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{parent} is not a directory", str(parent))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(
            errno.EACCES, f"cannot create a socket in directory {parent}", str(parent)
        )
    if os.path.lexists(p):
        if stat.S_ISSOCK(os.lstat(p).st_mode):
            if _listening(p):
                raise SpdkError(
                    errno.EADDRINUSE, "spdk_rpc_server_listen", raw, "a server is listening on it"
                )
            raise FileExistsError(
                errno.EEXIST,
                f"{p} is a socket nobody is listening on (left by a process that exited?); "
                "remove it or pick another path",
                raw,
            )
        raise FileExistsError(errno.EEXIST, f"{p} exists; remove it or pick another path", raw)
    if _lock_held(Path(raw + ".lock")):
        raise SpdkError(
            errno.EADDRINUSE,
            "spdk_rpc_server_listen",
            raw,
            f"another SPDK RPC server holds {raw}.lock",
        )
    return p


def _listening(path: Path) -> bool:
    """Whether something accepts connections on the unix socket ``path`` (never blocks).

    A socket this user may not use is a ``PermissionError``: nothing to tell there.
    """
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(str(path))
    except BlockingIOError:
        return True  # listening, its backlog is full
    except PermissionError:
        raise PermissionError(
            errno.EACCES, f"{path} exists and this user may not use it", str(path)
        ) from None
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _lock_held(lock: Path) -> bool:
    """Whether another open file holds SPDK's flock on ``lock`` (a live server's lock file)."""
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # also releases our lock
    return False


class RpcServer(Resource):
    """An SPDK JSON-RPC server listening on a unix socket, polled on the app thread.

    A resource of the app thread: closed (newest first) when it releases what it
    holds, if the user has not closed it; ``parent`` makes it close with that resource.

    The path is checked before SPDK is asked to listen: a missing directory is
    ``FileNotFoundError``, an unwritable one ``PermissionError``, a path where
    a server listens (or whose lock a live server holds) an ``OSError`` with
    ``errno.EADDRINUSE``, any other existing file ``FileExistsError``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        period_us: int = SERVE_PERIOD_US,
        parent: Resource | None = None,
    ) -> None:
        period_us = _validate.integer(period_us, "period_us", lo=0, hi=MAX_PERIOD_US)
        self.thread = _on_app_thread("spdk_io.rpc.serve")
        self.path = _socket_path(path)
        old = os.umask(0o177)  # the socket is created 0600, never briefly wider
        try:
            self._ptr: Any = g.spdk_rpc_server_listen(os.fsencode(self.path))
        finally:
            os.umask(old)
        if not self._ptr:
            raise SpdkError(errno.EIO, "spdk_rpc_server_listen", str(self.path), "see SPDK's log")
        super().__init__(self.thread, parent)
        try:
            os.chmod(self.path, 0o600)
            if period_us:
                Poller(self.accept, period_us=period_us, name="rpc_server", parent=self)
        except BaseException:
            self.close()
            raise

    def accept(self) -> bool:
        """Accept connections and serve requests that are waiting (one poll)."""
        if self._ptr:
            g.spdk_rpc_server_accept(self._ptr)
        return False

    def _release(self) -> None:
        """Stop listening and remove the socket (its poller, a child, is gone already)."""
        g.spdk_rpc_server_close(self._ptr)
        self._ptr = None


def serve(path: str | os.PathLike[str]) -> RpcServer:
    """Serve SPDK's JSON-RPC on the unix socket ``path`` (mode 0600) until closed."""
    main_interpreter_only("spdk_io.rpc.serve")
    return RpcServer(path)


#: Private socket directories: ``spdk_io-rpc-<pid>-<random>`` in the temp directory.
_DIR_PREFIX = "spdk_io-rpc-"
_DIR_RE = re.compile(r"spdk_io-rpc-([1-9]\d{0,9})-[A-Za-z0-9_]+")
_SOCK_NAME = "rpc.sock"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a pid that cannot exist counts as alive: not ours)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        return True  # exists and belongs to someone else, or is no pid at all
    return True


def reap_stale_dirs(tmp: str | None = None) -> list[str]:
    """Remove private socket directories that killed spdk_io processes left behind.

    A directory goes only if its name carries a pid that is no longer alive,
    it is a real directory (not a symlink) owned by this user with mode 0700,
    and no live SPDK server holds its lock.  Only the socket and its lock file
    are deleted, then the (then empty) directory.  Returns what was removed.
    """
    tmp = tmp if tmp is not None else tempfile.gettempdir()
    removed: list[str] = []
    try:
        entries = list(os.scandir(tmp))
    except OSError:
        return removed
    for entry in entries:
        match = _DIR_RE.fullmatch(entry.name)
        if match is None:
            continue
        pid = int(match[1])
        if pid == os.getpid() or _alive(pid):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if (
            not stat.S_ISDIR(st.st_mode)
            or st.st_uid != os.getuid()
            or stat.S_IMODE(st.st_mode) != 0o700
        ):
            continue
        if _remove_private_dir(entry.path):
            removed.append(entry.path)
    return removed


def _remove_private_dir(path: str) -> bool:
    """Delete ``rpc.sock``, its lock and then the directory, unless a server holds the lock."""
    try:
        dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        lock_name = _SOCK_NAME + ".lock"
        try:
            lfd: int | None = os.open(lock_name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dfd)
        except OSError:
            lfd = None
        try:
            if lfd is not None:
                try:
                    fcntl.flock(lfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    return False  # a live server (in another pid namespace?) holds it
            for name in (_SOCK_NAME, lock_name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=dfd)
        finally:
            if lfd is not None:
                os.close(lfd)
    except OSError:
        return False
    finally:
        os.close(dfd)
    try:
        os.rmdir(path)  # fails, and keeps it, if anything else is inside
    except OSError:
        return False
    return True


class _Client(Resource):
    """The private server and our connection to it, pumped while calls are in flight.

    A resource of the app thread; the server and the pump poller are its children.

    ``sock`` is ``None`` after the connection was lost; :meth:`submit` then
    connects again.
    """

    def __init__(self, thread: SpdkThread) -> None:
        reap_stale_dirs()
        self._dir = tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{os.getpid()}-")  # mode 0700
        self.sock: socket.socket | None = None
        self.out = bytearray()
        self.inbuf = bytearray()
        self.pending: dict[int, tuple[str, Op[JSON]]] = {}
        self.poller: Poller | None = None
        super().__init__(thread)
        try:
            self.server = RpcServer(Path(self._dir) / _SOCK_NAME, period_us=0, parent=self)
            self.connect()
        except BaseException:
            self.close()
            raise

    def connect(self) -> None:
        """Open a new connection to the private server (raises ``OSError`` if it is gone)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            # A unix socket connects at once (queued for accept) or fails; never "in progress".
            sock.connect(str(self.server.path))
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def submit(self, method: str, data: bytes, rid: int) -> Op[JSON]:
        if self.sock is None:
            self.connect()
        op: Op[JSON] = Op(f"rpc {method}")
        self.out += data
        self.pending[rid] = (method, op)
        if self.poller is None:
            self.poller = Poller(self.pump, name="rpc_client", parent=self)
        elif self.poller.paused:
            self.poller.resume()
        return op

    def pump(self) -> bool:
        """One poll: send what is queued, let the server work, read and deliver answers.

        Never raises: a socket error or an unreadable answer ends the connection
        and fails the calls in flight.
        """
        busy = False
        sock = self.sock
        if sock is not None and self.out:
            try:
                sent = sock.send(self.out)
                del self.out[:sent]
                busy = True
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:
                self._lost(f"sending failed: {exc}")
        self.server.accept()
        sock = self.sock
        while sock is not None:
            try:
                chunk = sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._lost(f"receiving failed: {exc}")
                break
            if not chunk:
                self._lost("SPDK closed it")
                break
            self.inbuf += chunk
            busy = True
            self._parse()
            sock = self.sock
        if not self.pending and not self.out and self.poller is not None:
            self.poller.pause()
        return busy

    def _parse(self) -> None:
        """Deliver every complete answer: SPDK ends each one with a newline."""
        start = 0
        while self.sock is not None:
            end = self.inbuf.find(b"\n", start)
            if end < 0:
                break
            line = bytes(self.inbuf[start:end])
            start = end + 1
            if line.strip():
                self._answer(line)
        del self.inbuf[:start]
        if len(self.inbuf) > _MAX_ANSWER_BYTES:
            self._lost(f"an answer longer than {_MAX_ANSWER_BYTES} bytes without an end")

    def _answer(self, line: bytes) -> None:
        try:
            response = json.loads(line)
        except ValueError as exc:  # invalid JSON or invalid UTF-8
            self._lost(f"unreadable answer ({exc}): {line[:80]!r}")
            return
        if not isinstance(response, dict):
            self._lost(f"an answer that is not a JSON-RPC response: {line[:80]!r}")
            return
        rid = response.get("id")
        if rid is None and "error" in response:
            # SPDK could not tell which request it answers (a parse error): all are suspect.
            self._lost(f"SPDK answered {_describe_error(response['error'])}")
            return
        entry = self.pending.pop(rid, None) if type(rid) is int else None
        if entry is None:
            return  # not ours (or answered already)
        method, op = entry
        if op.done():
            return
        if _is_error(response):
            op.set_exception(_rpc_error(method, response))
        else:
            op.set_result(response["result"])

    def _lost(self, why: str) -> None:
        """The connection is gone: fail every call in flight; the next call reconnects."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.out.clear()
        self.inbuf.clear()
        self._fail_all(
            f"the RPC connection to SPDK was lost ({why}); a call in flight may or may "
            "not have run, the next call reconnects"
        )
        if self.poller is not None and not self.poller.paused:
            self.poller.pause()

    def _fail_all(self, why: str) -> None:
        """Fail every call in flight with a ``ConnectionError(why)``, one per call: each
        awaiting task gets its own traceback, notes and context."""
        pending, self.pending = self.pending, {}
        for _, op in pending.values():
            if not op.done():
                op.set_exception(ConnectionError(why))

    def _release(self) -> None:
        """Fail what is in flight, hang up, remove the private directory (the server and
        the poller, children, are closed already)."""
        global _client
        self._fail_all("the RPC connection was closed: SPDK is shutting down")
        self.poller = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        shutil.rmtree(self._dir, ignore_errors=True)
        if _client is self:
            _client = None


def _is_error(response: dict[str, Any]) -> bool:
    return "error" in response or "result" not in response


def _describe_error(err: object) -> str:
    if isinstance(err, dict):
        return f"[{err.get('code')}] {err.get('message')}"
    return repr(err)


def _rpc_error(method: str, response: dict[str, Any]) -> RpcError:
    """SPDK's error as an :class:`RpcError`; a malformed one becomes code -32603."""
    if "error" not in response:
        return RpcError(method, -32603, f"SPDK's answer has neither result nor error: {response!r}")
    err = response["error"]
    if (
        isinstance(err, dict)
        and type(err.get("code")) is int
        and isinstance(err.get("message", ""), str)
    ):
        return RpcError(method, err["code"], err.get("message", ""), err.get("data"))
    return RpcError(method, -32603, f"SPDK sent a malformed error: {err!r}")


_client: _Client | None = None
_ids = itertools.count(1)


def call(method: str, params: Mapping[str, Any] | list[Any] | None = None) -> Op[JSON]:
    """Call the SPDK RPC ``method`` with ``params``; await it for the result.

    Must be called on the app thread (the one :func:`spdk_io.run` drives),
    else :class:`~spdk_io.errors.WrongThreadError`.  ``params`` SPDK could not
    parse is refused here (``TypeError``/``ValueError``), before anything is
    sent.  The awaited call raises :class:`~spdk_io.errors.RpcError` for
    SPDK's error answers and :class:`ConnectionError` if the connection was
    lost before the answer came.
    """
    global _client
    main_interpreter_only("spdk_io.rpc.call")
    if params is not None and not isinstance(params, Mapping | list):
        raise TypeError(f"RPC params must be a dict or a list, got {type(params).__name__}")
    body = dict(params) if isinstance(params, Mapping) else params
    rid = next(_ids)
    data = encode_request(method, body, rid)
    thread = _on_app_thread("spdk_io.rpc.call")
    if _client is not None and _client.server.closed:  # closed under us: start afresh
        _client.close()  # (closing forgets it: _client is None again)
    if _client is not None and _client.sock is None:
        try:
            _client.connect()
        except OSError:  # the private server is gone: start afresh
            _client.close()
    if _client is None:
        _client = _Client(thread)
    return _client.submit(method, data, rid)


def shutdown() -> None:
    """Close the private client and every server of this thread; calls in flight fail.

    Idempotent.  The next :func:`call` starts a new private server.  Teardown does
    the same by itself: both are resources of the app thread.
    """
    if _client is not None:
        _client.close()
    for resource in current_thread().resources():
        if isinstance(resource, RpcServer):
            resource.close()


