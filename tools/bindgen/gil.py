"""Which bound functions release the GIL while they run: the one table, and its rule.

Takes the parsed :class:`~bindgen.model.Bindings`; sets each function's
``releases_gil`` (the reason, or ``""``).  :mod:`bindgen.render_py` binds a function
with a reason on ``_lib`` (``ctypes.CDLL``: the GIL is released around the call) and
every other one on ``_pylib`` (``ctypes.PyDLL``: the GIL stays held, which makes a
short call about a quarter cheaper).

The rule: a function keeps the GIL unless it can *block*, that is, return only after
something else happened:

* it sleeps, spins or waits on file descriptors for a time;
* it runs until stopped (``spdk_app_start``), starts, joins or waits for threads, or
  brings DPDK's environment up or down;
* it polls a device or a remote target until it answers (SPDK's synchronous NVMe
  probe/attach/reset/detach, synchronous admin commands, blocking connects).

Holding the GIL through such a call is wrong in three ways: no other Python thread
runs meanwhile; Ctrl-C is delivered only once it returns; and it deadlocks when what it
waits for needs the GIL (an NVMe-oF target polled by another Python thread, SPDK's log
callback on a thread it waits for, a DPDK thread that calls back into Python).
Callbacks are no reason: C calling a ctypes callback during a PyDLL call re-enters
Python on the same thread, which already holds the GIL.

Not covered by the rule (see :mod:`spdk_io.log`): a short call that takes an SPDK mutex
another OS thread holds while logging through the Python log callback; the hot polls
(``spdk_thread_poll``) already run with the GIL held through ``spdk_io._loader.fast``.

A table entry that no header declares any more (SPDK renamed it) is reported by
:func:`stale_entries`; ``tests/test_generated.py`` fails on it.
"""

from __future__ import annotations

from collections.abc import Iterable

from .model import Bindings

SLEEPS = "sleeps or busy-waits for the time it is given"
WAITS_FD = "waits on file descriptors for events, up to its timeout"
RUNS_APP = "runs SPDK's reactors on this thread until spdk_app_stop()"
ENV = "brings DPDK's environment up or down: starts or joins threads, maps memory, scans devices"
THREADS = "starts an OS thread or waits for threads to finish"
THREAD_LIB = "sets up or tears down the thread library with the env (DPDK memory, EAL's locks)"
DEVICE_SCAN = "scans and attaches (or detaches) devices, waiting for each"
SUBSYSTEMS = "runs every subsystem's (or the config's) setup or teardown code: opens devices"
NVME_SYNC = "synchronous NVMe: polls (and sleeps) until the controller answers"
NVME_PROPERTY = "on fabrics, reads the register with a Property Get and polls until it answers"
SPINS = "spins until another thread releases the lock"
NVME_DISCOVERY = (
    "with a discovery NQN, reads the discovery log synchronously (polls until it answers)"
)
NVME_QPAIR = (
    "connects the queue pair synchronously unless async_mode is set (spins while CONNECTING)"
)
NVME_QPAIR_DELETE = "on PCIe, deletes the queue with a synchronous admin command"
OPAL = "synchronous OPAL security command: sends, then polls for the answer"
CONNECT = "blocking socket connect (up to the connect timeout)"
VFIO_USER = "talks to a vfio-user server over a socket and waits for its reply"
CUSE = "starts a CUSE device thread and waits for it"

#: Function -> why it is bound on the GIL-releasing library.  Every other function keeps
#: the GIL during the call.
RELEASES_GIL: dict[str, str] = {
    # time
    "spdk_delay_us": SLEEPS,
    "spdk_spin_lock": SPINS,
    "spdk_fd_group_wait": WAITS_FD,
    "spdk_nvme_poll_group_wait": WAITS_FD,
    "spdk_jsonrpc_client_poll": WAITS_FD,
    # the app framework and the environment
    "spdk_app_start": RUNS_APP,
    "spdk_app_fini": ENV,
    "spdk_env_init": ENV,
    "spdk_env_fini": ENV,
    "spdk_env_dpdk_post_init": ENV,
    "spdk_env_dpdk_post_fini": ENV,
    "spdk_thread_lib_init": THREAD_LIB,
    "spdk_thread_lib_init_ext": THREAD_LIB,
    "spdk_thread_lib_fini": THREAD_LIB,
    "spdk_env_thread_launch_pinned": THREADS,
    "spdk_env_thread_wait_all": THREADS,
    "spdk_subsystem_init": SUBSYSTEMS,
    "spdk_subsystem_fini": SUBSYSTEMS,
    "spdk_subsystem_load_config": SUBSYSTEMS,
    # devices
    "spdk_pci_enumerate": DEVICE_SCAN,
    "spdk_pci_device_attach": DEVICE_SCAN,
    "spdk_pci_device_detach": DEVICE_SCAN,
    "spdk_vmd_init": DEVICE_SCAN,
    "spdk_vmd_fini": DEVICE_SCAN,
    "spdk_vmd_rescan": DEVICE_SCAN,
    "spdk_ioat_probe": DEVICE_SCAN,
    "spdk_ae4dma_probe": DEVICE_SCAN,
    # NVMe, synchronous
    "spdk_nvme_probe": NVME_SYNC,
    "spdk_nvme_probe_ext": NVME_SYNC,
    "spdk_nvme_connect": NVME_SYNC,
    "spdk_nvme_detach": NVME_SYNC,
    "spdk_nvme_detach_poll": NVME_SYNC,
    "spdk_nvme_scan_attached": NVME_SYNC,
    "spdk_nvme_ctrlr_reset": NVME_SYNC,
    # (cap and vs are cached at attach: no Property Get)
    "spdk_nvme_ctrlr_get_regs_csts": NVME_PROPERTY,
    "spdk_nvme_ctrlr_get_regs_cc": NVME_PROPERTY,
    "spdk_nvme_ctrlr_get_regs_cmbsz": NVME_PROPERTY,
    "spdk_nvme_ctrlr_get_regs_pmrcap": NVME_PROPERTY,
    "spdk_nvme_ctrlr_get_regs_bpinfo": NVME_PROPERTY,
    "spdk_nvme_ctrlr_reset_subsystem": NVME_SYNC,
    "spdk_nvme_ctrlr_attach_ns": NVME_SYNC,
    "spdk_nvme_ctrlr_detach_ns": NVME_SYNC,
    "spdk_nvme_ctrlr_create_ns": NVME_SYNC,
    "spdk_nvme_ctrlr_delete_ns": NVME_SYNC,
    "spdk_nvme_ctrlr_format": NVME_SYNC,
    "spdk_nvme_ctrlr_update_firmware": NVME_SYNC,
    "spdk_nvme_ctrlr_security_send": NVME_SYNC,
    "spdk_nvme_ctrlr_security_receive": NVME_SYNC,
    "spdk_nvme_probe_async": NVME_DISCOVERY,
    "spdk_nvme_probe_async_ext": NVME_DISCOVERY,
    "spdk_nvme_connect_async": NVME_DISCOVERY,
    "spdk_nvme_ctrlr_alloc_io_qpair": NVME_QPAIR,
    "spdk_nvme_ctrlr_connect_io_qpair": NVME_QPAIR,
    "spdk_nvme_ctrlr_reconnect_io_qpair": NVME_QPAIR,
    "spdk_nvme_ctrlr_free_io_qpair": NVME_QPAIR_DELETE,
    "spdk_nvme_ctrlr_disconnect_io_qpair": NVME_QPAIR_DELETE,
    "spdk_nvme_cuse_register": CUSE,
    "spdk_opal_dev_construct": OPAL,
    # sockets
    "spdk_sock_connect": CONNECT,
    "spdk_sock_connect_ext": CONNECT,
    "spdk_jsonrpc_client_connect": CONNECT,
    "spdk_vfio_user_setup": VFIO_USER,
    "spdk_vfio_user_dev_send_request": VFIO_USER,
}

#: Name prefix -> reason, for families listed whole.
RELEASES_GIL_PREFIXES: dict[str, str] = {
    "spdk_opal_cmd_": OPAL,
}


def gil_reason(name: str) -> str:
    """Why ``name`` releases the GIL during its call, or ``""`` when it keeps it."""
    if name in RELEASES_GIL:
        return RELEASES_GIL[name]
    for prefix, reason in RELEASES_GIL_PREFIXES.items():
        if name.startswith(prefix):
            return reason
    return ""


def classify(b: Bindings) -> None:
    """Set ``releases_gil`` on every function of ``b`` from the table."""
    for fn in b.functions:
        fn.releases_gil = gil_reason(fn.name)


def stale_entries(declared: Iterable[str]) -> list[str]:
    """Table entries (names, ``prefix*``) that match no function in ``declared``."""
    names = set(declared)
    stale = sorted(n for n in RELEASES_GIL if n not in names)
    stale += sorted(
        f"{p}*" for p in RELEASES_GIL_PREFIXES if not any(n.startswith(p) for n in names)
    )
    return stale
