"""SPDK's log in Python's logging (spdk_io.log), against real SPDK."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

import spdk_io
from spdk_io import log

Run = Callable[[Awaitable[Any]], Any]


@pytest.fixture
def bridged(env: Any) -> Iterator[None]:
    if not log.supported():
        pytest.skip("SPDK's log comes to Python on x86-64 in the main interpreter only")
    was = log.installed()
    assert log.install()
    try:
        yield
    finally:
        if not was:
            log.uninstall()


def test_an_spdk_message_becomes_a_record_with_its_source(
    run: Run, bridged: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="spdk")
    long_name = "x" * 3000  # formatted twice: longer than the first buffer

    async def main() -> None:
        for name in ("NoSuchBdev0", long_name):
            with pytest.raises(LookupError):
                spdk_io.BdevDesc.open(name)

    run(main())
    records = [r for r in caplog.records if "unable to find bdev" in r.getMessage()]
    assert len(records) == 2, [r.getMessage()[:80] for r in caplog.records]
    first, second = records
    assert first.name == "spdk.bdev" and first.filename == "bdev.c"
    assert first.levelno == logging.INFO and first.lineno > 0 and first.funcName
    assert first.getMessage().endswith("NoSuchBdev0")
    assert second.getMessage().endswith(long_name)


def test_a_disabled_level_is_not_formatted_and_uninstall_gives_the_log_back(
    run: Run, bridged: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="spdk")

    async def main() -> None:
        with pytest.raises(LookupError):
            spdk_io.BdevDesc.open("NoSuchBdev1")

    run(main())
    assert not [r for r in caplog.records if r.name.startswith("spdk")]
    log.uninstall()
    assert not log.installed()
    log.uninstall()  # idempotent
    caplog.set_level(logging.DEBUG, logger="spdk")
    run(main())
    assert not [r for r in caplog.records if r.name.startswith("spdk")]


def test_flags(env: Any) -> None:
    with pytest.raises(ValueError, match="no log flag"):
        log.enable_flags("bdev", "no_such_flag_xyz")
    log.enable_flags("bdev")
    log.disable_flags("bdev")
    with pytest.raises(TypeError):
        log.enable_flags(3)  # type: ignore[arg-type]


def test_logger_names() -> None:
    assert log.logger_for(b"bdev.c").name == "spdk.bdev"
    assert log.logger_for(b"/src/spdk/lib/nvmf/tcp.c").name == "spdk.nvmf.tcp"
    assert log.logger_for(None).name == "spdk"
