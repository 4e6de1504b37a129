"""SPDK's log in Python's logging (spdk_io.log), against real SPDK."""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

import spdk_io
from spdk_io import _generated as g
from spdk_io import log
from spdk_io.errors import RpcError
from tests.conftest import run_py

Run = Callable[[Awaitable[Any]], Any]

needs_support = pytest.mark.skipif(
    not log.supported(), reason="SPDK's log comes to Python on x86-64 in the main interpreter"
)


@pytest.fixture
def bridged(env: Any) -> Iterator[None]:
    """The session's Env installed the log (on by default); put it back as it was."""
    if not log.supported():
        pytest.skip("SPDK's log comes to Python on x86-64 in the main interpreter only")
    assert log.installed(), "an Env that is up sends SPDK's log to Python by default"
    try:
        yield
    finally:
        log.install()


def _records(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


def test_a_known_spdk_error_becomes_a_record_with_spdks_source(
    run: Run, bridged: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="spdk")

    async def main() -> None:
        with pytest.raises(RpcError):  # SPDK refuses it: its block size is not 512-aligned
            await spdk_io.rpc.call(
                "bdev_malloc_create", {"name": "LogBad0", "num_blocks": 16, "block_size": 1000}
            )

    run(main())
    [record] = _records(caplog, "Data block size must be 512 bytes aligned")
    assert record.name == "spdk.bdev.malloc"  # bdev_malloc.c in libspdk_bdev_malloc.so
    assert record.levelno == logging.ERROR and record.levelname == "ERROR"
    assert record.filename == "bdev_malloc.c" and record.pathname == "bdev_malloc.c"
    assert record.funcName == "create_malloc_disk" and record.lineno > 0
    assert record.getMessage() == "Data block size must be 512 bytes aligned"
    assert record.thread == threading.get_ident()  # logged on the app thread, at once


def test_component_names_come_from_the_library_that_logged(
    run: Run, bridged: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="spdk")

    async def main() -> None:
        # A target of its own: the session's default target may have a TCP transport already.
        await spdk_io.rpc.call("nvmf_create_target", {"name": "log_test"})
        try:
            with pytest.raises(RpcError):  # refused by lib/nvmf/tcp.c
                params = {"trtype": "TCP", "tgt_name": "log_test", "sock_priority": 99}
                await spdk_io.rpc.call("nvmf_create_transport", params)
        finally:
            await spdk_io.rpc.call("nvmf_delete_target", {"name": "log_test"})
        with pytest.raises(LookupError):  # lib/bdev/bdev.c, at NOTICE
            spdk_io.BdevDesc.open("NoSuchBdev0")

    run(main())
    [tcp] = _records(caplog, "Unsupported socket_priority=99")
    assert tcp.name == "spdk.nvmf.tcp" and tcp.filename == "tcp.c"
    assert tcp.levelno == logging.ERROR and tcp.funcName == "nvmf_tcp_create"
    [bdev] = _records(caplog, "unable to find bdev with name: NoSuchBdev0")
    assert bdev.name == "spdk.bdev" and bdev.filename == "bdev.c"
    assert bdev.levelno == logging.INFO and bdev.lineno > 0 and bdev.funcName
    # Every record of this test came from a library of SPDK's: none fell back to a file name.
    names = {r.name for r in caplog.records if r.name.startswith("spdk.")}
    assert {"spdk.nvmf.tcp", "spdk.nvmf.rpc", "spdk.bdev"} <= names, names


def test_a_long_message_is_formatted_whole(
    run: Run, bridged: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="spdk")
    long_name = "x" * 3000  # longer than the first buffer: formatted a second time

    async def main() -> None:
        with pytest.raises(LookupError):
            spdk_io.BdevDesc.open(long_name)

    run(main())
    [record] = _records(caplog, "unable to find bdev")
    assert record.getMessage().endswith(long_name)


def test_a_message_from_an_os_thread_python_did_not_start(
    bridged: None, caplog: pytest.LogCaptureFixture
) -> None:
    """SPDK's and DPDK's threads are not Python's: their messages arrive too."""
    caplog.set_level(logging.DEBUG, logger="spdk")
    libc = ctypes.CDLL(None)
    start = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)
    seen: list[int] = []

    def body(arg: int | None) -> None:
        seen.append(threading.get_ident())
        g.spdk_log(g.SPDK_LOG_WARN, b"c_thread.c", 7, b"body", b"from a C thread\n")
        return None

    routine = start(body)
    tid = ctypes.c_ulong()
    assert libc.pthread_create(ctypes.byref(tid), None, routine, None) == 0
    assert libc.pthread_join(tid, None) == 0
    [record] = _records(caplog, "from a C thread")
    assert record.levelno == logging.WARNING and record.funcName == "body"
    assert record.lineno == 7 and record.thread == seen[0] != threading.get_ident()


def test_a_disabled_level_drops_the_message(
    run: Run, bridged: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="spdk")

    async def main() -> None:
        with pytest.raises(LookupError):
            spdk_io.BdevDesc.open("NoSuchBdev1")

    run(main())
    assert not [r for r in caplog.records if r.name.startswith("spdk")]


def test_uninstall_gives_the_log_back_and_restores_spdks_level(
    run: Run, bridged: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="spdk")
    assert log.sync_level() == g.SPDK_LOG_DEBUG == g.spdk_log_get_print_level()
    log.uninstall()
    assert not log.installed()
    log.uninstall()  # idempotent
    assert g.spdk_log_get_print_level() != g.SPDK_LOG_DEBUG  # what it was before install

    async def main() -> None:
        with pytest.raises(LookupError):
            spdk_io.BdevDesc.open("NoSuchBdev2")

    run(main())
    assert not [r for r in caplog.records if r.name.startswith("spdk")]
    assert log.install() and log.installed()
    run(main())
    assert _records(caplog, "NoSuchBdev2")


@pytest.mark.parametrize(
    ("level", "spdk"),
    [
        (logging.DEBUG, g.SPDK_LOG_DEBUG),
        (logging.INFO, g.SPDK_LOG_INFO),
        (logging.WARNING, g.SPDK_LOG_WARN),
        (logging.ERROR, g.SPDK_LOG_ERROR),
        (logging.CRITICAL, g.SPDK_LOG_DISABLED),
    ],
)
def test_spdks_level_follows_the_spdk_logger(bridged: None, level: int, spdk: int) -> None:
    logger = logging.getLogger("spdk")
    old = logger.level
    try:
        logger.setLevel(level)
        assert log.sync_level() == spdk
        assert g.spdk_log_get_level() == spdk == g.spdk_log_get_print_level()
    finally:
        logger.setLevel(old)
        log.sync_level()


def test_flags(env: Any) -> None:
    with pytest.raises(ValueError, match="no log flag"):
        log.enable_flags("bdev", "no_such_flag_xyz")
    assert not g.spdk_log_get_flag(b"bdev")  # nothing changed
    log.enable_flags("bdev")
    assert g.spdk_log_get_flag(b"bdev")
    log.disable_flags("bdev")
    assert not g.spdk_log_get_flag(b"bdev")
    with pytest.raises(TypeError):
        log.enable_flags(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("file", "library", "name"),
    [
        ("tcp.c", "nvmf", "spdk.nvmf.tcp"),
        ("nvmf_rpc.c", "nvmf", "spdk.nvmf.rpc"),
        ("bdev.c", "bdev", "spdk.bdev"),
        ("bdev_malloc.c", "bdev_malloc", "spdk.bdev.malloc"),
        ("bdev_malloc_rpc.c", "bdev_malloc", "spdk.bdev.malloc.rpc"),
        ("vbdev_passthru.c", "bdev_passthru", "spdk.bdev.passthru"),
        ("vbdev_zone_block.c", "bdev_zone_block", "spdk.bdev.zone_block"),
        ("env_dpdk_rpc.c", "env_dpdk_rpc", "spdk.env_dpdk.rpc"),
        ("memory.c", "env_dpdk", "spdk.env_dpdk.memory"),
        ("reactor.c", "event", "spdk.event.reactor"),
        ("scheduler_dynamic.c", "scheduler_dynamic", "spdk.scheduler_dynamic"),
        ("/src/spdk/lib/nvmf/tcp.c", "nvmf", "spdk.nvmf.tcp"),
        ("bdev.c", None, "spdk.bdev"),  # no library known: the file alone
        ("/src/spdk/lib/nvmf/tcp.c", None, "spdk.nvmf.tcp"),
        (None, None, "spdk"),
    ],
)
def test_logger_name_is_a_pure_function(file: str | None, library: str | None, name: str) -> None:
    libraries = {"nvmf", "bdev", "bdev_malloc", "bdev_passthru", "bdev_zone_block", "event"}
    libraries |= {"env_dpdk", "env_dpdk_rpc", "scheduler_dynamic"}
    assert log.logger_name(file, library, libraries) == name


def test_logger_for_a_file_name() -> None:
    assert log.logger_for(b"bdev.c").name == "spdk.bdev"
    assert log.logger_for(b"/src/spdk/lib/nvmf/tcp.c").name == "spdk.nvmf.tcp"
    assert log.logger_for(None).name == "spdk"


@needs_support
def test_messages_before_the_loop_runs_arrive_and_an_opt_out_leaves_the_log_to_spdk() -> None:
    proc = run_py(
        """
        import logging, sys
        import spdk_io
        from spdk_io import log

        seen = []
        class Keep(logging.Handler):
            def emit(self, record):
                seen.append((record.name, record.getMessage()))
        logging.getLogger("spdk").addHandler(Keep())
        logging.getLogger("spdk").setLevel(logging.INFO)

        async def nothing():
            return log.installed()

        print("during:", spdk_io.run(nothing(), name="logstart", mem_size_mb=512))
        print("after:", log.installed())
        print("start:", any("Starting SPDK" in m for _, m in seen))
        print("subsystems:", sorted({n for n, _ in seen})[:3])
        seen.clear()
        print("opted out:", spdk_io.run(nothing(), log_to_python=False), len(seen))
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert "during: True" in lines and "after: False" in lines, proc.stdout
    assert "start: True" in lines, proc.stdout  # logged by spdk_env_init, before any loop
    assert "opted out: False 0" in lines, proc.stdout


@needs_support
def test_an_app_sends_spdks_log_to_python_until_it_stops() -> None:
    proc = run_py(
        """
        import logging
        import spdk_io
        from spdk_io import log
        from spdk_io.errors import RpcError

        seen = []
        class Keep(logging.Handler):
            def emit(self, record):
                seen.append((record.name, record.levelname, record.getMessage()))
        logging.getLogger("spdk").addHandler(Keep())

        async def main():
            try:
                await spdk_io.rpc.call(
                    "bdev_malloc_create", {"num_blocks": 16, "block_size": 1000})
            except RpcError:
                pass
            return log.installed()

        print("during:", spdk_io.App(name="applog").run(main()))
        print("after:", log.installed())
        print([s for s in seen if "512 bytes" in s[2]])
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert "during: True" in lines and "after: False" in lines, proc.stdout
    assert (
        "[('spdk.bdev.malloc', 'ERROR', 'Data block size must be 512 bytes aligned')]" in lines
    ), proc.stdout


@needs_support
def test_ctrl_c_while_the_callback_runs_is_delivered_once_spdk_returns() -> None:
    proc = run_py(
        """
        import logging, signal
        from spdk_io import _generated as g
        from spdk_io import log

        class CtrlC(logging.Handler):
            def emit(self, record):
                signal.raise_signal(signal.SIGINT)  # Python's handler runs in the callback

        logging.getLogger("spdk").addHandler(CtrlC())
        assert log.install()
        try:
            g.spdk_log(g.SPDK_LOG_ERROR, b"x.c", 1, b"f", b"interrupted\\n")
            for _ in range(1000):
                pass
            print("NOT INTERRUPTED", flush=True)
        except KeyboardInterrupt:
            print("INTERRUPTED", flush=True)
        """
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["INTERRUPTED"], proc.stdout + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


@needs_support
def test_spdk_logging_while_python_exits_neither_crashes_nor_hangs() -> None:
    """An Env left up at exit: SPDK's threads may still log while Python finalizes."""
    proc = run_py(
        """
        import logging, threading, time
        from spdk_io import _generated as g
        from spdk_io.env import Env

        logging.getLogger("spdk").addHandler(logging.NullHandler())
        Env(name="logexit", mem_size_mb=512).start()  # never stopped

        def chatter():
            while True:
                g.spdk_log(g.SPDK_LOG_ERROR, b"x.c", 1, b"f", b"late message\\n")
                time.sleep(0.0001)

        for _ in range(2):
            threading.Thread(target=chatter, daemon=True).start()
        print("EXITING", flush=True)
        """,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["EXITING"]
