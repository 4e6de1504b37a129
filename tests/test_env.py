"""spdk_io.run and Env in fresh processes: the README example, teardown after errors, Ctrl-C."""

from __future__ import annotations

import pytest

import spdk_io
from spdk_io.env import MIN_MEM_SIZE_MB, Env, EnvOptions
from tests.conftest import run_py


async def _nothing() -> None:
    pass


def test_readme_example_runs() -> None:
    proc = run_py(
        """
        import spdk_io

        async def main() -> None:
            await spdk_io.rpc.call(
                "bdev_malloc_create", {"name": "Malloc0", "num_blocks": 1024, "block_size": 4096}
            )
            info = await spdk_io.rpc.call("bdev_get_bdevs", {"name": "Malloc0"})
            print("blocks", info[0]["num_blocks"])

        spdk_io.run(main(), name="demo")
        print("clean exit")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "blocks 1024" in proc.stdout and "clean exit" in proc.stdout


def test_error_in_main_tears_down_and_process_can_run_again() -> None:
    proc = run_py(
        """
        import spdk_io

        async def bad() -> None:
            await spdk_io.sleep(0.001)
            raise ValueError("main failed")

        try:
            spdk_io.run(bad())
        except ValueError as exc:
            print("caught", exc)

        async def good() -> str:
            v = await spdk_io.rpc.call("spdk_get_version")
            return v["version"]

        print("second run", spdk_io.run(good()))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "caught main failed" in proc.stdout
    assert "second run SPDK v26.05" in proc.stdout


def test_ctrl_c_cancels_tasks_and_tears_down() -> None:
    proc = run_py(
        """
        import os, signal
        import spdk_io

        async def main() -> None:
            try:
                await spdk_io.sleep(0.01)
                os.kill(os.getpid(), signal.SIGINT)
                await spdk_io.sleep(30)
            finally:
                print("task cleanup ran", flush=True)

        try:
            spdk_io.run(main())
        except KeyboardInterrupt:
            print("KeyboardInterrupt after teardown")
        from spdk_io import env
        print("active env:", env._active)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "task cleanup ran" in proc.stdout
    assert "KeyboardInterrupt after teardown" in proc.stdout
    assert "active env: None" in proc.stdout


def test_json_config_runtime_methods_are_applied() -> None:
    proc = run_py(
        """
        import spdk_io
        config = {"subsystems": [{"subsystem": "bdev", "config": [
            {"method": "bdev_malloc_create",
             "params": {"name": "CfgMalloc", "num_blocks": 64, "block_size": 512}}]}]}

        async def main() -> int:
            info = await spdk_io.rpc.call("bdev_get_bdevs", {"name": "CfgMalloc"})
            return info[0]["num_blocks"]

        print("num_blocks", spdk_io.run(main(), config=config))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "num_blocks 64" in proc.stdout


def test_bad_config_fails_cleanly() -> None:
    proc = run_py(
        """
        import spdk_io
        from spdk_io.errors import SpdkError
        config = {"subsystems": [{"subsystem": "bdev", "config": [
            {"method": "bdev_malloc_create", "params": {"name": "X", "num_blocks": -5}}]}]}

        async def main() -> None:
            pass

        try:
            spdk_io.run(main(), config=config)
        except SpdkError as exc:
            print("SpdkError:", exc.op)
        print("after", spdk_io.env._active)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "SpdkError: spdk_subsystem_load_config" in proc.stdout
    assert "after None" in proc.stdout


def test_env_options_validate() -> None:
    with pytest.raises(ValueError):
        EnvOptions(mem_size_mb=0)
    with pytest.raises(ValueError):
        EnvOptions(core_mask="zz")
    with pytest.raises(ValueError):
        EnvOptions(iova_mode="bogus")  # type: ignore[arg-type]  # the runtime check is the point
    opts = EnvOptions(no_huge=True).resolved()
    assert opts.no_huge and opts.mem_size_mb == 512


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", 123),
        ("name", b"spdk"),
        ("core_mask", 1),
        ("mem_size_mb", "512"),
        ("mem_size_mb", 512.0),
        ("mem_size_mb", True),
        ("shm_id", "1"),
        ("no_pci", 1),
        ("no_pci", "yes"),
        ("no_huge", "no"),
        ("no_huge", 0),
        ("main_core", 0.0),
        ("iova_mode", 1),
        ("hugedir", 5),
        ("extra", [("no_pci", True)]),
    ],
)
def test_env_option_of_the_wrong_type_names_the_field(field: str, value: object) -> None:
    with pytest.raises(TypeError, match=rf"^{field}\b"):
        EnvOptions(**{field: value})  # type: ignore[arg-type]  # the point of the test


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", ""),
        ("name", "a\0b"),
        ("core_mask", "0x0"),
        ("core_mask", "zz"),
        ("core_mask", "[]"),
        ("core_mask", "[1-0]"),
        ("core_mask", "--lcores=1"),
        ("mem_size_mb", -1),
        ("shm_id", -2),
        ("main_core", -2),
        ("main_core", 1),  # not in the default mask 0x1
        ("iova_mode", "xx"),
        ("hugedir", "/no/such/dir"),
        ("extra", {"no_such_field": 1}),
        ("extra", {"name": b"x"}),  # a field EnvOptions sets itself
    ],
)
def test_env_option_out_of_range_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"^{field}\b"):
        EnvOptions(**{field: value})  # type: ignore[arg-type]  # the point of the test


def test_env_options_accept_good_values() -> None:
    opts = EnvOptions(core_mask="[0,2-3]", main_core=3, mem_size_mb=1024, shm_id=0)
    assert opts.cores == frozenset({0, 2, 3})
    assert EnvOptions(core_mask="0x6", main_core=2).cores == frozenset({1, 2})
    assert EnvOptions(core_mask="F").cores == frozenset({0, 1, 2, 3})
    assert EnvOptions(hugedir="/tmp").hugedir == "/tmp"
    assert EnvOptions(extra={"mem_channel": 2}).extra == {"mem_channel": 2}


def test_too_little_memory_without_hugepages_names_the_option_and_minimum() -> None:
    with pytest.raises(ValueError, match=r"^mem_size_mb=64 is too small.* at least \d+ MiB"):
        EnvOptions(mem_size_mb=64, no_huge=True).resolved()
    assert EnvOptions(mem_size_mb=MIN_MEM_SIZE_MB, no_huge=True).resolved().mem_size_mb == (
        MIN_MEM_SIZE_MB
    )


def test_unknown_keyword_is_a_clear_type_error() -> None:
    with pytest.raises(TypeError, match=r"mem_size.*mem_size_mb"):
        Env(mem_size=512)  # type: ignore[call-arg]  # the point of the test
    with pytest.raises(TypeError, match=r"mem_size.*mem_size_mb"):
        spdk_io.run(_nothing(), mem_size=512)  # type: ignore[call-arg]  # the point of the test


def test_options_and_keywords_together_are_refused() -> None:
    with pytest.raises(TypeError, match="not both"):
        Env(EnvOptions(), name="x")


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"subsystems": 5}, "subsystems"),
        ({"subsystems": [{"config": []}]}, "subsystem"),
        ({"subsystems": [{"subsystem": "bdev", "config": [{"params": {}}]}]}, "method"),
        ({"subsystems": [{"subsystem": "bdev", "config": [{"method": 5}]}]}, "method"),
        ('{"subsystems": [}', "not valid JSON"),
    ],
)
def test_malformed_config_is_refused_up_front(config: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Env(config=config)  # type: ignore[arg-type]  # the point of the test


def test_config_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(TypeError, match=r"^config must be"):
        Env(config=[1, 2])  # type: ignore[arg-type]  # the point of the test


def test_objects_outliving_their_env_are_harmless() -> None:
    proc = run_py(
        """
        import spdk_io
        from spdk_io import bdev_modules as bm
        from spdk_io.bdev import BdevDesc
        from spdk_io.thread import Poller

        kept = {}

        async def main() -> None:
            kept["poller"] = Poller(lambda: False, period_us=1000, name="outlives")
            await bm.create_malloc("Outlive0", 16, 4096)
            kept["desc"] = BdevDesc.open("Outlive0")

        spdk_io.run(main())
        kept["poller"].unregister()          # its SPDK thread is gone: a no-op
        kept["desc"].close()                 # closed at teardown: a no-op
        for call in (kept["poller"].pause, lambda: kept["desc"].read_blocks(None, 0, 1)):
            try:
                call()
            except (RuntimeError, ValueError) as exc:
                print(type(exc).__name__)
        print("no crash")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["RuntimeError", "ValueError", "no", "crash"]
