"""The RPC client survives what SPDK cannot parse, lost connections and odd answers.

Issue #7: one RPC that SPDK's JSON-RPC server cannot parse made SPDK close the
connection; the next call then ended ``spdk_io.run`` with a ``BrokenPipeError``
from the client's poller.  Requests are now checked against SPDK's real limits
before they are sent, and a lost connection fails only the calls in flight.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import spdk_io
from spdk_io import rpc
from spdk_io.errors import RpcError, WrongThreadError
from tests.conftest import run_py

Run = Callable[[Awaitable[Any]], Any]


def deep(levels: int) -> dict[str, Any]:
    """``{"a": {"a": ... {}}}`` with ``levels`` objects."""
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def test_issue_unparsable_rpc_then_next_call_does_not_end_the_run() -> None:
    """The issue's reproduction, in a process of its own: it must not crash."""
    proc = run_py(
        """
        import spdk_io
        from spdk_io import rpc

        async def main() -> list[str]:
            seen = []
            for bad in (float("nan"), float("inf"), float("-inf"), "\\ud800"):
                try:
                    await rpc.call("bdev_get_bdevs", {"timeout": bad})
                    seen.append("accepted")
                except Exception as exc:
                    seen.append(type(exc).__name__)
            version = await rpc.call("spdk_get_version")
            seen.append("healthy" if "version" in version else "broken")
            return seen

        print(spdk_io.run(main(), name="rpc_issue"))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "['ValueError', 'ValueError', 'ValueError', 'ValueError', 'healthy']" in proc.stdout


BAD_PARAMS: dict[str, tuple[Any, type[Exception], str]] = {
    "nan": ({"timeout": float("nan")}, ValueError, "nan"),
    "inf": ({"timeout": float("inf")}, ValueError, "inf"),
    "-inf": ({"timeout": float("-inf")}, ValueError, "inf"),
    "nested nan": ({"a": [1, {"b": float("nan")}]}, ValueError, "['a'][1]['b']"),
    "lone surrogate": ({"name": "\ud800"}, ValueError, "surrogate"),
    "surrogate key": ({"\udc80": 1}, ValueError, "surrogate"),
    "200 deep": (deep(200), ValueError, "nesting"),
    "1 MB string": ({"name": "x" * (1 << 20)}, ValueError, "bytes"),
    "100k list": ({"names": list(range(100_000))}, ValueError, "values"),
    "bytes": ({"name": b"Malloc0"}, TypeError, "bytes"),
    "set": ({"names": {"a"}}, TypeError, "set"),
    "int key": ({1: "a"}, TypeError, "key"),
    "tuple key": ({(1, 2): "a"}, TypeError, "key"),
    "object": ({"name": object()}, TypeError, "object"),
    "huge int": ({"num_blocks": 1 << 64}, ValueError, "64"),
    "huge negative int": ({"num_blocks": -(1 << 63) - 1}, ValueError, "64"),
    "gigantic int": ({"num_blocks": 10**5000}, ValueError, "64"),
}


@pytest.mark.parametrize("case", list(BAD_PARAMS))
def test_params_spdk_cannot_take_are_refused_before_sending(run: Run, case: str) -> None:
    params, error, words = BAD_PARAMS[case]

    async def main() -> None:
        with pytest.raises(error) as info:
            rpc.call("bdev_get_bdevs", params)
        assert "params" in str(info.value)
        assert words in str(info.value)
        assert "version" in await rpc.call("spdk_get_version")  # still connected

    run(main())


def test_circular_params_are_refused(run: Run) -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop

    async def main() -> None:
        with pytest.raises(ValueError, match=r"circular|nesting"):
            rpc.call("bdev_get_bdevs", loop)
        assert "version" in await rpc.call("spdk_get_version")

    run(main())


def test_requests_up_to_spdks_limits_go_through(run: Run) -> None:
    """Right at SPDK's limits the request is sent; SPDK answers (with a decode error)."""

    base = len(rpc.encode_request("bdev_get_bdevs", {"name": ""}, 1))

    async def main() -> None:
        limits = [
            deep(rpc.MAX_PARAMS_DEPTH),
            # 9 values of envelope, 2 + 1 + 2 for {"names": [...]}: exactly MAX_VALUES.
            {"names": list(range(rpc.MAX_VALUES - 14))},
            # Within a few bytes (the request id's digits) of MAX_REQUEST_BYTES.
            {"name": "x" * (rpc.MAX_REQUEST_BYTES - base - 8)},
            {"name": "\u00e9\U0001f600" * 4000},  # non-ASCII travels escaped
            {"num_blocks": (1 << 64) - 1, "other": -(1 << 63)},
        ]
        for params in limits:
            with pytest.raises(RpcError):  # SPDK parsed it and refused the parameters
                await rpc.call("bdev_get_bdevs", params)
        # Just past the limits: refused here, never sent.
        with pytest.raises(ValueError, match="nesting"):
            rpc.call("bdev_get_bdevs", deep(rpc.MAX_PARAMS_DEPTH + 1))
        with pytest.raises(ValueError, match="values"):
            rpc.call("bdev_get_bdevs", {"names": list(range(rpc.MAX_VALUES - 13))})
        with pytest.raises(ValueError, match="bytes"):
            rpc.call("bdev_get_bdevs", {"name": "x" * (rpc.MAX_REQUEST_BYTES - base + 1)})
        assert "version" in await rpc.call("spdk_get_version")

    run(main())


async def _raw_exchange(path: Path, request: bytes) -> str:
    """Send raw bytes to a served socket; "answered", or "closed" if SPDK hung up first."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    out = bytearray(request)
    sock.connect(str(path))
    sock.setblocking(False)
    answer = b""
    try:
        for _ in range(2000):
            if out:
                with contextlib.suppress(BlockingIOError):
                    del out[: sock.send(out)]
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                await spdk_io.sleep(0.002)
                continue
            except ConnectionResetError:
                return "closed"
            if not chunk:
                return "closed" if b'"id":7' not in answer.replace(b" ", b"") else "answered"
            answer += chunk
            if answer.endswith(b"\n") and b'"id":7' in answer.replace(b" ", b""):
                return "answered"
        return "no answer"
    finally:
        sock.close()


def _request_of(params: str, size: int | None = None) -> bytes:
    head = '{"jsonrpc":"2.0","method":"bdev_get_bdevs","id":7,"params":'
    if size is not None:  # pad with a string to exactly ``size`` bytes
        pad = size - len(head) - len('{"name":""}}')
        params = '{"name":"' + "x" * pad + '"}'
    data = (head + params + "}").encode()
    assert size is None or len(data) == size
    return data


def test_spdk_limits_are_the_real_ones(run: Run, tmp_path: Path) -> None:
    """SPDK itself answers right at each limit and hangs up one step past it."""
    path = tmp_path / "limits.sock"
    n = rpc.MAX_VALUES - 14
    cases = {
        "values at limit": _request_of('{"names":[' + ",".join(["1"] * n) + "]}"),
        "values past limit": _request_of('{"names":[' + ",".join(["1"] * (n + 1)) + "]}"),
        "depth at limit": _request_of('{"a":' * (rpc.MAX_PARAMS_DEPTH - 1) + "{}" + "}" * 62),
        "depth past limit": _request_of('{"a":' * rpc.MAX_PARAMS_DEPTH + "{}" + "}" * 63),
        "size at limit": _request_of("", size=rpc.MAX_REQUEST_BYTES),
        "size past limit": _request_of("", size=rpc.MAX_REQUEST_BYTES + 1),
    }

    async def main() -> dict[str, str]:
        with rpc.serve(path):
            return {name: await _raw_exchange(path, req) for name, req in cases.items()}

    outcomes = run(main())
    assert outcomes == {name: ("answered" if "at limit" in name else "closed") for name in cases}


def test_non_ascii_strings_round_trip(run: Run) -> None:
    name = "RpcMalloc\u00e9\u4e2d\U0001f600"

    async def main() -> list[Any]:
        await rpc.call("bdev_malloc_create", {"name": name, "num_blocks": 64, "block_size": 512})
        try:
            result: list[Any] = await rpc.call("bdev_get_bdevs", {"name": name})
            return result
        finally:
            await rpc.call("bdev_malloc_delete", {"name": name})

    assert run(main())[0]["name"] == name


@pytest.mark.parametrize(
    ("method", "error"),
    [
        ("spdk_get\0_version", ValueError),
        ("", ValueError),
        (b"spdk_get_version", TypeError),
        (None, TypeError),
    ],
)
def test_bad_method_names_are_refused(run: Run, method: Any, error: type[Exception]) -> None:
    async def main() -> None:
        with pytest.raises(error, match="method"):
            rpc.call(method)
        assert "version" in await rpc.call("spdk_get_version")

    run(main())


def test_non_ascii_method_name_is_simply_not_found(run: Run) -> None:
    async def main() -> None:
        with pytest.raises(RpcError) as info:
            await rpc.call("spdk_get_versi\u00f6n")
        assert info.value.code == -32601
        assert "version" in await rpc.call("spdk_get_version")

    run(main())


def _break_connection() -> None:
    """Make SPDK drop our connection the way an unparsable request does.

    White box: writes a byte SPDK's parser rejects straight into the client's
    socket (the public API refuses to send it).
    """
    client = rpc._client
    assert client is not None and client.sock is not None
    client.sock.send(b"}")


def test_connection_closed_by_spdk_fails_pending_calls_then_reconnects(run: Run) -> None:
    async def main() -> tuple[list[Any], Any]:
        assert "version" in await rpc.call("spdk_get_version")  # the client exists
        _break_connection()
        calls = [rpc.call("spdk_get_version") for _ in range(50)]
        outcomes: list[Any] = []
        for op in calls:
            try:
                outcomes.append(await op)
            except ConnectionError as exc:
                outcomes.append(exc)
        return outcomes, await rpc.call("spdk_get_version")

    outcomes, after = run(main())
    failed = [o for o in outcomes if isinstance(o, ConnectionError)]
    assert failed, "SPDK closed the connection: the calls in flight must fail"
    assert all("RPC connection" in str(e) for e in failed)
    assert all(isinstance(o, ConnectionError) or "version" in o for o in outcomes)
    assert "version" in after


def test_a_new_private_server_when_the_old_one_is_gone(run: Run) -> None:
    async def main() -> None:
        assert "version" in await rpc.call("spdk_get_version")
        old = rpc._client
        assert old is not None
        old.server.close()  # white box: the private server goes away
        assert "version" in await rpc.call("spdk_get_version")
        assert rpc._client is not old

    run(main())


def test_bad_method_text_is_refused(run: Run) -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match=r"RPC method .* surrogate"):
            rpc.call("spdk_get_version\udc80")
        with pytest.raises(ValueError, match="bytes"):
            rpc.call("x" * (rpc.MAX_REQUEST_BYTES + 1))
        assert "version" in await rpc.call("spdk_get_version")

    run(main())


def test_many_concurrent_calls_while_the_connection_drops(run: Run) -> None:
    async def main() -> tuple[int, int]:
        await rpc.call("spdk_get_version")

        async def one(i: int) -> bool:
            try:
                await rpc.call("bdev_get_bdevs")
                return True
            except ConnectionError:
                return False

        async def breaker() -> None:
            await spdk_io.sleep(0)
            _break_connection()

        tasks = [spdk_io.spawn(one(i)) for i in range(200)]
        spdk_io.spawn(breaker())
        results = await spdk_io.gather(*tasks)
        again = await spdk_io.gather(*(one(i) for i in range(20)))
        return results.count(False), again.count(True)

    _failed, ok_after = run(main())
    assert ok_after == 20


def test_call_from_a_non_app_thread_is_a_clear_error(run: Run) -> None:
    errors: list[BaseException] = []

    def plain_os_thread() -> None:
        try:
            rpc.call("spdk_get_version")
        except BaseException as exc:
            errors.append(exc)

    async def main() -> None:
        await rpc.call("spdk_get_version")
        t = threading.Thread(target=plain_os_thread)
        t.start()
        t.join()
        worker = spdk_io.SpdkThread.spawn(lambda: rpc.call("spdk_get_version"), name="rpc_other")
        with pytest.raises(WrongThreadError, match="app thread"):
            await worker
        assert "version" in await rpc.call("spdk_get_version")

    run(main())
    assert len(errors) == 1 and isinstance(errors[0], WrongThreadError), errors
    assert "app thread" in str(errors[0])


# --- answers of an unexpected shape -------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        b'{"jsonrpc": "2.0", "id": ID, "error": "not an object"}\n',
        b'{"jsonrpc": "2.0", "id": ID, "error": {"code": "x", "message": 5}}\n',
        b'{"jsonrpc": "2.0", "id": ID}\n',
        b"[1, 2, 3]\n",
        b"this is not json\n",
        b'{"jsonrpc": "2.0", "id": ID, "result": "\xff\xfe"}\n',
    ],
)
def test_odd_answers_fail_the_call_not_the_loop(answer: bytes) -> None:
    """A fake server (a thread) answers spdk_io's client with odd JSON; the loop goes on."""
    proc = run_py(
        f"""
        import json, socket, tempfile, threading, os
        import spdk_io
        from spdk_io import rpc

        answer = {answer!r}

        async def main() -> str:
            await rpc.call("spdk_get_version")
            client = rpc._client  # white box: swap SPDK's end for a fake server
            ours, theirs = socket.socketpair()
            ours.setblocking(False)
            client.sock.close()
            client.sock = ours

            def fake() -> None:
                request = json.loads(theirs.recv(65536))
                theirs.sendall(answer.replace(b"ID", str(request["id"]).encode()))
                theirs.close()

            threading.Thread(target=fake).start()
            try:
                result = await spdk_io.wait_for(rpc.call("spdk_get_version"), 10)
                outcome = "result " + repr(result)
            except Exception as exc:
                outcome = type(exc).__name__ + ": " + str(exc)
            version = await rpc.call("spdk_get_version")
            return outcome + " | then " + ("healthy" if "version" in version else "broken")

        print(spdk_io.run(main(), name="rpc_odd"))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "then healthy" in proc.stdout
    assert "Error" in proc.stdout.split("|")[0], proc.stdout  # the call failed, clearly


def test_shutdown_fails_calls_in_flight_and_the_next_call_starts_afresh(run: Run) -> None:
    async def main() -> None:
        pending = rpc.call("spdk_get_version")
        rpc.shutdown()
        rpc.shutdown()  # idempotent
        with pytest.raises(ConnectionError, match="shutting down"):
            await pending
        assert "version" in await rpc.call("spdk_get_version")

    run(main())
