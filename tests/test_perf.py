"""The perf tool, run as users run it: ``python -m spdk_io perf``."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import finish_within, run_py, start_py


def perf(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_py(args=["-m", "spdk_io", "perf", *args], timeout=timeout)


@pytest.mark.parametrize(
    "args",
    [
        ("--bdev", "null", "-q", "8", "-w", "randread"),
        ("--bdev", "malloc", "-q", "4", "-w", "rw", "-M", "70", "--malloc-mib", "16"),
        ("--bdev", "malloc", "-q", "2", "-o", "131072", "-w", "read", "--malloc-mib", "16"),
    ],
)
def test_perf_json_last_line(args: tuple[str, ...]) -> None:
    proc = perf(*args, "-t", "0.5", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("iops", "mib_s", "avg_lat_us", "p50_lat_us", "p99_lat_us", "p999_lat_us",
                "max_lat_us", "io_errors", "ios"):  # fmt: skip
        assert key in result
    assert result["ios"] > 0 and result["iops"] > 0 and result["io_errors"] == 0
    assert 0 < result["p50_lat_us"] <= result["p99_lat_us"] <= result["p999_lat_us"]
    assert result["p999_lat_us"] <= result["max_lat_us"]
    assert 0 < result["avg_lat_us"] <= result["max_lat_us"]


def test_perf_human_output() -> None:
    proc = perf("--bdev", "null", "-q", "2", "-t", "0.3")
    assert proc.returncode == 0, proc.stderr
    assert "IOPS" in proc.stdout and "p99.9" in proc.stdout


# -- bad arguments: one line on stderr, exit code 2, no traceback ---------------------------

_SMALL_BDEV = {  # a 64 KiB malloc bdev named "Small" (16 blocks of 4 KiB)
    "subsystems": [
        {
            "subsystem": "bdev",
            "config": [
                {
                    "method": "bdev_malloc_create",
                    "params": {"name": "Small", "num_blocks": 16, "block_size": 4096},
                }
            ],
        }
    ]
}


_BIG_BDEV = {  # a 480 MiB malloc bdev: perf's buffers no longer fit in what is left
    "subsystems": [
        {
            "subsystem": "bdev",
            "config": [
                {
                    "method": "bdev_malloc_create",
                    "params": {"name": "Big", "num_blocks": 480 * 256, "block_size": 4096},
                }
            ],
        }
    ]
}


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("perf_configs")
    files = {
        "small": json.dumps(_SMALL_BDEV),
        "invalid": '{"subsystems": [',
        "list": "[]",
        "big": json.dumps(_BIG_BDEV),
    }
    out = {}
    for name, content in files.items():
        (d / f"{name}.json").write_text(content)
        out[name] = str(d / f"{name}.json")
    out["missing"] = str(d / "no_such_config.json")
    return out


BAD_ARGS = [
    # (arguments, a word the message must contain)
    (("--json-config", "{missing}"), "--json-config"),
    (("--json-config", "{invalid}"), "--json-config"),
    (("--json-config", "{list}"), "--json-config"),
    (("-o", "268435456", "-w", "read"), "-o"),  # 32 GiB of buffers
    (("-o", "268435456", "-w", "read", "-q", "1"), "-o"),  # larger than the 128 MiB bdev
    (("-o", "2097152", "-w", "randread", "--malloc-mib", "1", "-q", "1"), "-o"),
    (("-o", "131072", "--bdev", "Small", "--json-config", "{small}"), "-o"),  # > 64 KiB bdev
    (("-o", "131072", "-w", "read", "--bdev", "Small", "--json-config", "{small}"), "-o"),
    (("-o", "1536", "--bdev", "Small", "--json-config", "{small}"), "-o"),  # block size 4096
    (("-o", "1048576", "-q", "1024"), "-q"),
    # Within the up-front budget, but the config's bdev took the memory: refused at allocation.
    (("--bdev", "null", "-o", "1048576", "-q", "256", "--json-config", "{big}"), "-q"),
    (("-o", "1000"), "-o"),
    (("-o", "0"), "-o"),
    (("-o", "-4096"), "-o"),
    (("-o", "x"), "-o"),
    (("-t", "1e300"), "-t"),
    (("-t", "inf"), "-t"),
    (("-t", "nan"), "-t"),
    (("-t", "0"), "-t"),
    (("-t", "-1"), "-t"),
    (("-q", "0"), "-q"),
    (("-q", "-1"), "-q"),
    (("-q", "5000"), "-q"),
    (("-q", "1.5"), "-q"),
    (("-M", "101"), "-M"),
    (("-M", "-1"), "-M"),
    (("-w", "bogus"), "-w"),
    (("--malloc-mib", "0"), "--malloc-mib"),
    (("--malloc-mib", "100000"), "--malloc-mib"),
    (("--bdev", "NoSuchBdev"), "NoSuchBdev"),
    (("--bdev", ""), "--bdev"),
    (("--no-such-flag",), "--no-such-flag"),
    (("-q",), "-q"),
]


@pytest.mark.parametrize(("args", "word"), BAD_ARGS, ids=[" ".join(a) for a, _ in BAD_ARGS])
def test_perf_bad_argument_is_one_line_and_exit_2(
    args: tuple[str, ...], word: str, configs: dict[str, str]
) -> None:
    # -t first: a -t under test comes later and wins.
    proc = perf("-t", "0.3", *(a.format(**configs) for a in args), timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and lines, proc.stderr
    # Our message is one line, the last; anything before it is SPDK's own log ("[...] ...").
    assert lines[-1].startswith("perf: ") and word in lines[-1], proc.stderr
    assert all(line.startswith("[") for line in lines[:-1]), proc.stderr
    assert proc.stdout == ""


def test_perf_refuses_too_much_buffer_memory_and_says_the_limit() -> None:
    proc = perf("-o", "1048576", "-q", "1024")
    assert proc.returncode == 2
    assert "MiB" in proc.stderr and "limit" in proc.stderr, proc.stderr


def python_m_spdk_io(*args: str) -> subprocess.CompletedProcess[str]:
    return run_py(args=["-m", "spdk_io", *args])


def test_module_entry_point_usage_and_unknown_command() -> None:
    none = python_m_spdk_io()
    assert none.returncode == 2 and none.stdout == "" and "usage" in none.stderr
    unknown = python_m_spdk_io("bogus")
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1
    assert "bogus" in unknown.stderr and "Traceback" not in unknown.stderr
    helped = python_m_spdk_io("perf", "--help")
    assert helped.returncode == 0 and "-q" in helped.stdout and helped.stderr == ""


def test_perf_very_short_run_is_fine() -> None:
    proc = perf("--bdev", "null", "-q", "2", "-t", "1e-6", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["seconds"] < 5


def test_perf_config_accepts_the_longest_run_without_running_it() -> None:
    from spdk_io.perf import MAX_SECONDS, PerfConfig

    PerfConfig(seconds=MAX_SECONDS).validate()
    with pytest.raises(ValueError, match=r"seconds \(-t\)"):
        PerfConfig(seconds=MAX_SECONDS * 1.001).validate()


# -- Ctrl-C -------------------------------------------------------------------------------


def test_perf_ctrl_c_exits_130_with_one_line() -> None:
    proc = start_py(args=["-m", "spdk_io", "perf", "--bdev", "null", "-q", "8", "-t", "30"])
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    _, err, _ = finish_within(proc, 15)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "perf: interrupted", err


# -- constant memory (issue #8) -----------------------------------------------------------


def test_perf_memory_stays_flat_during_a_run() -> None:
    """RSS at each progress tick (once a second, while I/O runs) does not grow."""
    code = """
        import json, sys
        from spdk_io.perf import PerfConfig, run_perf

        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096

        ticks = []

        class Tee:
            def write(self, s):
                if "IOPS" in s:
                    ticks.append(rss())
                return len(s)
            def flush(self):
                pass

        real = sys.stderr
        sys.stderr = Tee()
        try:
            r = run_perf(PerfConfig(bdev="null", queue_depth=32, seconds=6), progress=True)
        finally:
            sys.stderr = real
        print(json.dumps({"ticks": ticks, "ios": r.ios}))
    """
    proc = run_py(code, timeout=60)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    ticks, ios = res["ticks"], res["ios"]
    assert len(ticks) >= 4, res
    grown = max(ticks[1:]) - ticks[0]
    # One array entry per I/O would add 8 bytes x ~(5/6) x ios between the first and last tick.
    assert grown < 1 << 20, f"RSS grew by {grown} bytes over {ios} I/Os: {ticks}"


def test_run_perf_rejects_bad_config_before_starting_spdk() -> None:
    """The API validates too (types and ranges), without bringing SPDK up."""
    code = """
        from spdk_io import env
        from spdk_io.perf import PerfConfig, run_perf
        for kw in ({"queue_depth": True}, {"seconds": "5"}, {"workload": "seq"},
                   {"io_size": 4096.0}, {"json_config": 3}, {"read_pct": None}):
            try:
                run_perf(PerfConfig(**kw))
            except (TypeError, ValueError) as exc:
                name = next(iter(kw))
                assert name in str(exc), (kw, exc)
            else:
                raise AssertionError(kw)
        assert not env.is_up()
        print("ok")
    """
    proc = run_py(code, timeout=30)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_perf_config_path_is_accepted(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(_SMALL_BDEV))
    proc = perf("--bdev", "Small", "--json-config", str(cfg), "-q", "2", "-t", "0.3", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["bdev"] == "Small"
