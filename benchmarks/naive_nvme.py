"""The NVMe yardstick: a bare ctypes I/O loop on one queue pair, no coroutines.

    PYTHONPATH=. python benchmarks/naive_nvme.py -r TRID -q 128 -o 4096 -t 5 --json

spdk_io is used for setup only (env, controller, queue pair, DMA buffers).  What is
measured is the cheapest plain-ctypes loop there is, what ``python -m spdk_io perf -r``
is up against: ``ctypes.PyDLL`` functions without ``argtypes`` called with prebuilt
ctypes arguments; one module-level ``CFUNCTYPE`` completion shared by every slot
(``cb_arg`` = slot index) that counts and resubmits that slot's next read with
``spdk_nvme_ns_cmd_read``; and a main loop that calls
``spdk_nvme_qpair_process_completions`` directly, polling the SPDK thread (the admin
queue's keep-alive) every 64 turns.  Offsets come from a precomputed table and latency
is one ``perf_counter_ns`` pair per I/O, as in perf, so the two compare like for like.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import random
import sys
import time
from typing import Any

import spdk_io
from spdk_io.dma import DmaBuf
from spdk_io.nvme import Controller, QpairOptions, TransportId

_TABLE = 1 << 16  # precomputed offsets, cycled
_VP, _U64, _U32 = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32
#: void (*spdk_nvme_cmd_cb)(void *cb_arg, const struct spdk_nvme_cpl *cpl)
COMPLETION_CB = ctypes.CFUNCTYPE(None, _VP, _VP)

_pylib = ctypes.PyDLL(None)  # every SPDK symbol is global once spdk_io loaded it
_read = _pylib.spdk_nvme_ns_cmd_read
_read.restype = ctypes.c_int
_process = _pylib.spdk_nvme_qpair_process_completions
_process.restype = ctypes.c_int32
_thread_poll = _pylib.spdk_thread_poll
_thread_poll.restype = ctypes.c_int
_u16_at = ctypes.c_uint16.from_address


class _State:
    """Everything the shared callback touches (module-level, like a C global)."""

    def __init__(self) -> None:
        self.submit: Any = None  # (slot) -> rc
        self.stop = False
        self.ios = self.errors = self.inflight = self.lat_ns = 0
        self.starts: list[int] = []


_st = _State()
_now = time.perf_counter_ns


def _on_complete(cb_arg: int | None, cpl: int) -> None:
    st = _st
    slot = cb_arg or 0
    t = _now()
    st.lat_ns += t - st.starts[slot]
    st.ios += 1
    if _u16_at(cpl + 14).value & 0xFFFE:
        st.errors += 1
    if st.stop:
        st.inflight -= 1
        return
    st.starts[slot] = t
    if st.submit(slot):
        st.inflight -= 1
        st.errors += 1


_CB = COMPLETION_CB(_on_complete)  # one callback object for every I/O, kept alive here


def run(trid: str, queue_depth: int, io_size: int, seconds: float, seed: int = 1) -> dict[str, Any]:
    with spdk_io.Env(name="naive_nvme", mem_size_mb=1024, core_mask="0x1") as env:
        assert env.thread is not None
        thread = _VP(ctypes.cast(env.thread.ptr, ctypes.c_void_p).value)
        ctrlr = env.block_on(Controller.connect(TransportId.parse(trid)))
        try:
            ns = ctrlr.namespace(ctrlr.namespace_ids()[0])
            if io_size % ns.sector_size:
                raise ValueError(f"-o {io_size} is not a multiple of {ns.sector_size}")
            blocks = io_size // ns.sector_size
            opts = QpairOptions(io_queue_requests=max(512, queue_depth))
            qp = env.block_on(ctrlr.alloc_qpair(opts))
            bufs = [DmaBuf.alloc(io_size, 4096) for _ in range(queue_depth)]
            try:
                rng = random.Random(seed)
                slots = ns.num_sectors // blocks
                offsets = [rng.randrange(slots) * blocks for _ in range(_TABLE)]
                qp_arg = _VP(ctypes.cast(qp.handle, ctypes.c_void_p).value)
                ns_arg = _VP(ctypes.cast(ns.handle, ctypes.c_void_p).value)
                result = _measure(thread, qp_arg, ns_arg, bufs, blocks, offsets, seconds)
            finally:
                for b in bufs:
                    b.free()
                qp.close()
        finally:
            env.block_on(ctrlr.detach())
    return {"queue_depth": queue_depth, "io_size": io_size, **result}


def _measure(
    thread: Any,
    qp: Any,
    ns: Any,
    bufs: list[DmaBuf],
    blocks: int,
    offsets: list[int],
    seconds: float,
) -> dict[str, Any]:
    st = _st
    qd = len(bufs)
    mask = len(offsets) - 1
    pos = [0]
    n = _U32(blocks)
    buf_args = [_VP(b.addr) for b in bufs]
    lba_args = [_U64() for _ in bufs]
    slot_args = [_VP(k) for k in range(qd)]

    def submit(slot: int) -> int:
        i = pos[0]
        pos[0] = i + 1
        lba = lba_args[slot]
        lba.value = offsets[i & mask]
        rc: int = _read(ns, qp, buf_args[slot], lba, n, _CB, slot_args[slot], 0)
        return rc

    st.submit = submit
    st.stop = False
    st.ios = st.errors = st.inflight = st.lat_ns = 0
    st.starts = [0] * qd
    zero32, zero64 = _U32(0), _U64(0)
    perf = time.perf_counter
    t0 = perf()
    for slot in range(qd):
        st.starts[slot] = _now()
        rc = submit(slot)
        if rc:
            raise OSError(-rc, "spdk_nvme_ns_cmd_read failed")
        st.inflight += 1
    deadline = t0 + seconds
    while True:
        for _ in range(64):
            _process(qp, 0)
        _thread_poll(thread, zero32, zero64)  # the admin queue (keep-alive)
        if perf() >= deadline:
            break
    st.stop = True
    elapsed = perf() - t0
    ios, lat_ns = st.ios, st.lat_ns
    drain_deadline = perf() + 10
    while st.inflight > 0 and perf() < drain_deadline:
        _process(qp, 0)
    if st.inflight > 0:
        raise RuntimeError(f"{st.inflight} I/Os did not complete")
    return {
        "seconds": round(elapsed, 3),
        "ios": ios,
        "iops": round(ios / elapsed, 1),
        "mib_s": round(ios * len(bufs[0]) / elapsed / (1 << 20), 2),
        "avg_lat_us": round(lat_ns / ios / 1000, 3) if ios else 0.0,
        "io_errors": st.errors,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("-r", required=True, dest="trid", help="the NVMe transport ID")
    p.add_argument("-q", type=int, default=128, dest="queue_depth", help="queue depth")
    p.add_argument("-o", type=int, default=4096, dest="io_size", help="I/O size in bytes")
    p.add_argument("-w", default="randread", choices=("randread",), help="the one workload")
    p.add_argument("-t", type=float, default=5.0, dest="seconds", help="run time in seconds")
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    a = p.parse_args(argv)
    if not 1 <= a.queue_depth <= 4096 or a.io_size <= 0 or a.io_size % 512 or a.seconds <= 0:
        p.error("need 1 <= -q <= 4096, -o a positive multiple of 512, -t > 0")
    r = run(a.trid, a.queue_depth, a.io_size, a.seconds)
    if a.json:
        print(json.dumps(r))
    else:
        print(
            f"naive NVMe randread qd={r['queue_depth']} {r['io_size']} B: {r['iops']:,.0f} IOPS, "
            f"{r['mib_s']:,.1f} MiB/s, avg {r['avg_lat_us']:.2f} us, errors {r['io_errors']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
