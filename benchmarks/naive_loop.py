"""The yardstick: a naive hand-written ctypes I/O loop, no coroutines.

    PYTHONPATH=. python benchmarks/naive_loop.py -q 128 -o 4096 -w randread -t 5 --bdev null --json

spdk_io is used for setup only (env, bdev, descriptor, channel, DMA buffers).
What is measured is what a user without spdk_io would write: one module-level
``CFUNCTYPE`` completion callback shared by every slot (``cb_arg`` = slot
index) that frees the ``bdev_io``, counts, and resubmits that slot's next I/O
with ``spdk_bdev_read_blocks``/``spdk_bdev_write_blocks``; and a main loop that
polls the app SPDK thread until the time is up.

* default: functions from ``ctypes.CDLL`` with ``argtypes`` set (ctypes converts
  every argument and releases the GIL on each call), as a typical user writes it;
* ``--prebuilt``: ``ctypes.PyDLL`` functions without ``argtypes``, called with
  prebuilt ctypes arguments (the cheapest plain-ctypes call there is).

Offsets come from a precomputed table and latency is one ``perf_counter_ns``
pair per I/O, as in ``python -m spdk_io perf``, so the two compare like for like.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import random
import sys
import time
from dataclasses import dataclass
from typing import Any

import spdk_io
from spdk_io import bdev_modules as bm
from spdk_io.bdev import BdevDesc
from spdk_io.dma import DmaBuf

WORKLOADS = ("randread", "randwrite", "read", "write")
_TABLE = 1 << 16  # precomputed offsets, cycled

_VP, _U64 = ctypes.c_void_p, ctypes.c_uint64
#: void (*spdk_bdev_io_completion_cb)(struct spdk_bdev_io *, bool success, void *cb_arg)
COMPLETION_CB = ctypes.CFUNCTYPE(None, _VP, ctypes.c_bool, _VP)

# Plain ctypes, as a user would bind it: every SPDK symbol is global once spdk_io loaded it.
_lib = ctypes.CDLL(None)
_read_blocks = _lib.spdk_bdev_read_blocks
_write_blocks = _lib.spdk_bdev_write_blocks
for _fn in (_read_blocks, _write_blocks):
    _fn.argtypes = [_VP, _VP, _VP, _U64, _U64, COMPLETION_CB, _VP]
    _fn.restype = ctypes.c_int
_free_io = _lib.spdk_bdev_free_io
_free_io.argtypes = [_VP]
_free_io.restype = None
_thread_poll = _lib.spdk_thread_poll
_thread_poll.argtypes = [_VP, ctypes.c_uint32, _U64]
_thread_poll.restype = ctypes.c_int

# The prebuilt-argument variant: GIL held, no argtypes, so nothing is converted per call.
_pylib = ctypes.PyDLL(None)
_read_blocks_pb = _pylib.spdk_bdev_read_blocks
_write_blocks_pb = _pylib.spdk_bdev_write_blocks
for _fn in (_read_blocks_pb, _write_blocks_pb):
    _fn.restype = ctypes.c_int
_free_io_pb = _pylib.spdk_bdev_free_io
_free_io_pb.argtypes = [_VP]  # the callback hands us a Python int: it must become a pointer
_free_io_pb.restype = None
_thread_poll_pb = _pylib.spdk_thread_poll
_thread_poll_pb.restype = ctypes.c_int


@dataclass
class _State:
    """Everything the shared callback touches (module-level, like a C global)."""

    submit: Any = None  # (slot) -> rc
    free: Any = None
    stop: bool = False
    ios: int = 0
    errors: int = 0
    inflight: int = 0
    lat_ns: int = 0
    starts: list[int] | None = None
    retry: list[int] | None = None


_st = _State()
_now = time.perf_counter_ns


def _on_complete(bdev_io: int | None, success: bool, cb_arg: int | None) -> None:
    st = _st
    st.free(bdev_io)
    slot = cb_arg or 0  # ctypes turns a NULL void * into None
    starts = st.starts
    assert starts is not None
    t = _now()
    st.lat_ns += t - starts[slot]
    st.ios += 1
    if not success:
        st.errors += 1
    if st.stop:
        st.inflight -= 1
        return
    starts[slot] = t
    rc = st.submit(slot)
    if rc:
        st.inflight -= 1
        if rc == -errno.ENOMEM:  # out of bdev_io: the main loop resubmits it
            assert st.retry is not None
            st.retry.append(slot)
        else:
            st.errors += 1


_CB = COMPLETION_CB(_on_complete)  # one callback object for every I/O, kept alive here


@dataclass(frozen=True)
class Result:
    variant: str
    bdev: str
    workload: str
    queue_depth: int
    io_size: int
    seconds: float
    ios: int
    iops: float
    mib_s: float
    avg_lat_us: float
    io_errors: int


def _offsets(workload: str, blocks: int, capacity: int, seed: int) -> list[int]:
    slots = capacity // blocks
    if workload.startswith("rand"):
        rng = random.Random(seed)
        return [rng.randrange(slots) * blocks for _ in range(_TABLE)]
    return [(k % slots) * blocks for k in range(_TABLE)]


def _make_submit(
    desc: BdevDesc, bufs: list[DmaBuf], blocks: int, offsets: list[int], write: bool, prebuilt: bool
) -> Any:
    """The per-slot submit function the callback calls: ``slot -> rc``."""
    qd = len(bufs)
    mask = len(offsets) - 1
    # One cursor shared by all slots, as bdevperf does: every submission takes the next
    # offset, so a sequential workload's outstanding I/Os are consecutive chunks.
    pos = [0]
    desc_p = ctypes.cast(desc._ptr, ctypes.c_void_p).value
    ch_p = ctypes.cast(desc._channel._ptr, ctypes.c_void_p).value
    if not prebuilt:
        fn = _write_blocks if write else _read_blocks
        addrs = [b.addr for b in bufs]

        def submit(slot: int) -> int:
            i = pos[0]
            pos[0] = i + 1
            rc: int = fn(desc_p, ch_p, addrs[slot], offsets[i & mask], blocks, _CB, slot)
            return rc

        return submit

    fnp = _write_blocks_pb if write else _read_blocks_pb
    d, c, n = _VP(desc_p), _VP(ch_p), _U64(blocks)
    buf_args = [_VP(b.addr) for b in bufs]
    off_args = [_U64() for _ in bufs]
    slot_args = [_VP(k) for k in range(qd)]

    def submit_pb(slot: int) -> int:
        i = pos[0]
        pos[0] = i + 1
        off = off_args[slot]
        off.value = offsets[i & mask]
        rc: int = fnp(d, c, buf_args[slot], off, n, _CB, slot_args[slot])
        return rc

    return submit_pb


def run(
    queue_depth: int,
    io_size: int,
    workload: str,
    seconds: float,
    bdev: str,
    prebuilt: bool = False,
    malloc_mib: int = 128,
    seed: int = 1,
) -> Result:
    if workload not in WORKLOADS:
        raise ValueError(f"workload must be one of {WORKLOADS}, got {workload!r}")
    write = workload.endswith("write")
    with spdk_io.Env(name="naive_loop", mem_size_mb=1024, core_mask="0x1") as env:
        if bdev == "null":
            name = "Naive_Null0"
            env.block_on(bm.create_null(name, 1 << 20, 4096))
        elif bdev == "malloc":
            name = "Naive_Malloc0"
            env.block_on(bm.create_malloc(name, malloc_mib * (1 << 20) // 4096, 4096))
        else:
            raise ValueError(f"--bdev must be null or malloc, got {bdev!r}")
        assert env.thread is not None
        thread = ctypes.cast(env.thread.ptr, ctypes.c_void_p).value
        try:
            desc = BdevDesc.open(name, write=write)
            bufs = [DmaBuf.alloc(io_size, 4096) for _ in range(queue_depth)]
            try:
                if io_size % desc.block_size:
                    raise ValueError(f"-o {io_size} is not a multiple of {desc.block_size}")
                blocks = io_size // desc.block_size
                offsets = _offsets(workload, blocks, desc.num_blocks, seed)
                result = _measure(thread, desc, bufs, blocks, offsets, write, prebuilt, seconds)
            finally:
                for b in bufs:
                    b.free()
                desc.close()
        finally:
            env.block_on(bm.delete_null(name) if bdev == "null" else bm.delete_malloc(name))
    return Result(
        variant="prebuilt" if prebuilt else "argtypes",
        bdev=name,
        workload=workload,
        queue_depth=queue_depth,
        io_size=io_size,
        **result,
    )


def _measure(
    thread: int | None,
    desc: BdevDesc,
    bufs: list[DmaBuf],
    blocks: int,
    offsets: list[int],
    write: bool,
    prebuilt: bool,
    seconds: float,
) -> dict[str, Any]:
    st = _st
    qd = len(bufs)
    st.submit = _make_submit(desc, bufs, blocks, offsets, write, prebuilt)
    st.free = _free_io_pb if prebuilt else _free_io
    st.stop = False
    st.ios = st.errors = st.inflight = st.lat_ns = 0
    st.starts = [0] * qd
    st.retry = []
    retry = st.retry
    if prebuilt:
        poll: Any = _thread_poll_pb
        poll_args: tuple[Any, ...] = (_VP(thread), ctypes.c_uint32(0), _U64(0))
    else:
        poll = _thread_poll
        poll_args = (thread, 0, 0)
    submit = st.submit
    perf = time.perf_counter

    t0 = perf()
    for slot in range(qd):
        st.starts[slot] = _now()
        rc = submit(slot)
        if rc == -errno.ENOMEM:
            retry.append(slot)
        elif rc:
            raise OSError(-rc, f"spdk_bdev_{'write' if write else 'read'}_blocks failed")
        st.inflight += 1
    deadline = t0 + seconds
    while True:
        for _ in range(64):
            poll(*poll_args)
        if retry:
            for slot in retry[:]:
                retry.remove(slot)
                st.starts[slot] = _now()
                if submit(slot) == -errno.ENOMEM:
                    retry.append(slot)
                else:
                    st.inflight += 1
        if perf() >= deadline:
            break
    st.stop = True
    elapsed = perf() - t0
    ios, lat_ns = st.ios, st.lat_ns
    drain_deadline = perf() + 10
    while st.inflight > 0 and perf() < drain_deadline:
        poll(*poll_args)
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
    p.add_argument("-q", type=int, default=128, dest="queue_depth", help="queue depth")
    p.add_argument("-o", type=int, default=4096, dest="io_size", help="I/O size in bytes")
    p.add_argument("-w", default="randread", dest="workload", choices=WORKLOADS)
    p.add_argument("-t", type=float, default=5.0, dest="seconds", help="run time in seconds")
    p.add_argument("--bdev", default="null", choices=("null", "malloc"))
    p.add_argument("--malloc-mib", type=int, default=128, help="size of the malloc bdev")
    p.add_argument("--prebuilt", action="store_true", help="PyDLL, prebuilt args, no argtypes")
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    a = p.parse_args(argv)
    if not 1 <= a.queue_depth <= 4096 or a.io_size <= 0 or a.io_size % 512 or a.seconds <= 0:
        p.error("need 1 <= -q <= 4096, -o a positive multiple of 512, -t > 0")
    r = run(a.queue_depth, a.io_size, a.workload, a.seconds, a.bdev, a.prebuilt, a.malloc_mib)
    if a.json:
        print(json.dumps(r.__dict__))
    else:
        print(
            f"naive ({r.variant}) {r.bdev} {r.workload} qd={r.queue_depth} {r.io_size} B: "
            f"{r.iops:,.0f} IOPS, {r.mib_s:,.1f} MiB/s, avg {r.avg_lat_us:.2f} us, "
            f"errors {r.io_errors}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
