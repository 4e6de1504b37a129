"""``python -m spdk_io serve --metrics-port``: a real Prometheus scrape (HTTP GET of
/metrics, parsed by prometheus_client's own parser) before and after real NVMe-oF/TCP
I/O from SPDK's spdk_nvme_perf."""

from __future__ import annotations

import json
import re
import signal
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from spdk_io.nvme.transport import TransportId
from tests.conftest import finish_within, free_port, run_py, spdk_tool, start_py, wait_ready

parser = pytest.importorskip("prometheus_client.parser")

NQN = "nqn.2016-06.io.spdk:stats1"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def nvmf_config(port: int) -> dict[str, object]:
    listen = {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": str(port)}
    return {
        "subsystems": [
            {
                "subsystem": "bdev",
                "config": [
                    {
                        "method": "bdev_malloc_create",
                        "params": {"name": "Malloc0", "num_blocks": 4096, "block_size": 4096},
                    }
                ],
            },
            {
                "subsystem": "nvmf",
                "config": [
                    {"method": "nvmf_create_transport", "params": {"trtype": "TCP"}},
                    {
                        "method": "nvmf_create_subsystem",
                        "params": {
                            "nqn": NQN,
                            "serial_number": "STATS0001",
                            "allow_any_host": True,
                        },
                    },
                    {
                        "method": "nvmf_subsystem_add_ns",
                        "params": {"nqn": NQN, "namespace": {"bdev_name": "Malloc0"}},
                    },
                    {
                        "method": "nvmf_subsystem_add_listener",
                        "params": {"nqn": NQN, "listen_address": listen},
                    },
                ],
            },
        ]
    }


def scrape(port: int) -> Samples:
    """GET /metrics and parse it with prometheus_client's text-format parser."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        body = r.read().decode()
    out: Samples = {}
    for family in parser.text_string_to_metric_families(body):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def matching(
    samples: Samples, name: str, **labels: str
) -> dict[tuple[tuple[str, str], ...], float]:
    want = set(labels.items())
    return {k: v for (n, k), v in samples.items() if n == name and want <= set(k)}


def scrape_after(port: int, t: float, limit: float = 20.0) -> Samples:
    """The first scrape whose snapshot was taken after Unix time ``t``."""
    deadline = time.monotonic() + limit
    while True:
        samples = scrape(port)
        if value(samples, "spdk_io_snapshot_timestamp_seconds") > t:
            return samples
        if time.monotonic() > deadline:
            pytest.fail(f"no snapshot newer than {t} within {limit} s")
        time.sleep(0.1)


def test_a_prometheus_scrape_sees_the_io_of_spdk_nvme_perf(tmp_path: Path) -> None:
    nvmf_port, metrics_port = free_port(), free_port()
    config = tmp_path / "nvmf.json"
    config.write_text(json.dumps(nvmf_config(nvmf_port)))
    proc = start_py(
        args=[
            "-m",
            "spdk_io",
            "serve",
            "--json-config",
            str(config),
            "--metrics-port",
            str(metrics_port),
            "--metrics-period",
            "0.2",
        ]
    )
    try:
        wait_ready(proc)
        before = scrape_after(metrics_port, 0)
        trid = str(TransportId.tcp("127.0.0.1", nvmf_port, NQN))
        perf = spdk_tool(
            "spdk_nvme_perf", "-q", "8", "-o", "4096", "-w", "randread", "-t", "1", "-r", trid
        )
        assert perf.returncode == 0, perf.stderr[-2000:]
        assert re.search(r"^Total\s*:\s*[\d.]+", perf.stdout, re.M), perf.stdout[-2000:]
        after = scrape_after(metrics_port, time.time())
    finally:
        proc.send_signal(signal.SIGINT)
        _, err, _ = finish_within(proc, 30)
    assert proc.returncode == 0, err[-3000:]

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    reads = delta("spdk_bdev_ops_total", bdev="Malloc0", op="read")
    assert reads > 0
    assert delta("spdk_bdev_bytes_total", bdev="Malloc0", op="read") == reads * 4096
    assert delta("spdk_bdev_ops_total", bdev="Malloc0", op="write") == 0
    assert delta("spdk_bdev_latency_seconds_total", bdev="Malloc0", op="read") > 0
    # NVMe-oF: every read perf sent arrived through a poll group of SPDK's target.
    done = matching(after, "spdk_nvmf_completed_nvme_io_total", target="nvmf_tgt")
    done0 = matching(before, "spdk_nvmf_completed_nvme_io_total", target="nvmf_tgt")
    completed = sum(done.values()) - sum(done0.values())
    # Every successful read went through a poll group; the target also counts commands
    # that did not end as successful reads (up to perf's queue depth, 8, at its exit).
    assert reads <= completed <= reads + 8
    assert sum(matching(after, "spdk_nvmf_io_qpairs_total").values()) >= 1
    # Threads, pollers and the loop kept counting.
    busy = matching(after, "spdk_thread_busy_seconds_total")
    busy0 = matching(before, "spdk_thread_busy_seconds_total")
    assert sum(busy.values()) > sum(busy0.values())
    runs = matching(after, "spdk_poller_runs_total")
    assert any(v > matching(before, "spdk_poller_runs_total").get(k, 0) for k, v in runs.items())
    (app_loop,) = matching(after, "spdk_io_loop_turns_total", loop="app_thread")
    loop = dict(app_loop)  # with its loop_id
    assert delta("spdk_io_loop_turns_total", **loop) > 0
    assert delta("spdk_io_loop_tasks_run_total", **loop) > 0
    assert value(after, "spdk_io_loop_ready_high_water", **loop) >= 1


def test_bad_metrics_options_exit_2_with_one_line() -> None:
    for args, why in (
        (["--metrics-port", "70000"], "metrics port"),
        (["--metrics-port", "0"], "metrics port"),
        (["--metrics-port", "9", "--metrics-period", "0"], "metrics period"),
        (["--metrics-port", "x"], "invalid int"),
    ):
        done = run_py(args=["-m", "spdk_io", "serve", "--json-config", "none.json", *args])
        assert done.returncode == 2, (args, done.stderr)
        assert why in done.stderr and done.stderr.startswith("serve: "), (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_metrics_port_in_use_is_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "empty.json"
    config.write_text(json.dumps({"subsystems": []}))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_py(
            args=[
                "-m",
                "spdk_io",
                "serve",
                "--json-config",
                str(config),
                "--metrics-port",
                str(port),
            ]
        )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "serve: " in done.stderr and "in use" in done.stderr, done.stderr[-3000:]
    assert "READY" not in done.stdout


def test_metrics_without_prometheus_client_is_exit_2_naming_the_extra() -> None:
    done = run_py(
        """
        import sys
        sys.modules["prometheus_client"] = None  # as if it were not installed
        from spdk_io.serve import main
        sys.exit(main(["--json-config", "none.json", "--metrics-port", "9100"]))
        """
    )
    assert done.returncode == 2, done.stderr
    assert "spdk-io[metrics]" in done.stderr and done.stderr.startswith("serve: "), done.stderr
