"""The one bridge from SPDK's C callbacks to Python.

SPDK reports completions by calling ``fn(..., void *cb_arg)``.  spdk_io passes
a small integer *key* as ``cb_arg`` and keeps what the key stands for in one
table.  For every callback signature there is exactly one ``CFUNCTYPE``
trampoline, created at import and kept alive for the life of the process, so
no callback object is ever created per call or freed while C holds it.  (One
exception, for a measured reason: each :class:`~spdk_io.bdev.IoStream` has a
completion of its own, see :func:`bdev_io_callback`.)

An entry is ``(fn, op)``: the trampoline calls ``fn`` with the callback's
arguments (minus ``cb_arg``); status completions and the hot I/O completions pass
``op`` first (``fn(op, status)``).  If ``fn`` raises, the exception goes to ``op``
when it is still pending (so it reaches the task awaiting it); otherwise it
stops the loop of this OS thread with :class:`~spdk_io.errors.CallbackError`
(a ``KeyboardInterrupt``/``SystemExit`` finishes ``op`` *and* stops the loop);
with no loop on this OS thread, that thread's next loop raises it.  See
:func:`spdk_io.loop.callback_failed`.  Everything a trampoline does is inside
its ``try``, so nothing raised in a callback is lost or unwinds into C.  (A
Ctrl-C cannot arrive inside a callback while a loop runs or teardown runs:
the loop handles SIGINT as an event, see :mod:`spdk_io.loop`.)

One-shot entries are removed when their callback fires; persistent entries
(pollers, event callbacks, iterations) stay until :func:`forget` is called.

SPDK's iterations (``spdk_for_each_thread``, ``spdk_bdev_for_each_channel``) call
one function on every thread or channel, each on the thread visited, which may be
another OS thread than the caller's (:func:`iterate` runs them).  Their visits have
trampolines of their own, though ``spdk_for_each_thread``'s ``fn`` is an
``spdk_msg_fn`` like :func:`_on_ctx`'s: a visit must neither take its entry (the
iteration needs it for the next visit and its end) nor hand an exception to the
entry's ``Op``, which belongs to the caller's loop on the caller's OS thread:
finishing it from the visited thread would race with that loop.  A visit's own
errors go to its OS thread's loop (:func:`~spdk_io.loop.callback_failed` with no
``Op``); the end of the iteration, on the caller's thread, finishes the ``Op``.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import weakref
from collections.abc import Callable
from typing import Any

from spdk_io import _generated as g
from spdk_io import loop as _loop
from spdk_io._loader import fast
from spdk_io.errors import SpdkError
from spdk_io.loop import Op

__all__ = [
    "forget",
    "iterate",
    "once",
    "once_at",
    "pending",
    "persistent",
    "sgl_at",
    "status_op",
    "submit",
]

Entry = tuple[Callable[..., Any], "Op[Any] | None"]

_once: dict[int, Entry] = {}
_persistent: dict[int, Entry] = {}
_next_key = itertools.count(1).__next__
stale_callbacks = 0


def once(fn: Callable[..., Any], op: Op[Any] | None = None) -> int:
    """Register ``fn`` to run once, when a callback with the returned key fires."""
    key = _next_key()
    _once[key] = (fn, op)
    return key


def persistent(fn: Callable[..., Any], op: Op[Any] | None = None) -> int:
    """Register ``fn`` for a callback that may fire many times (a poller, an event)."""
    key = _next_key()
    _persistent[key] = (fn, op)
    return key


def once_at(key: int, fn: Callable[..., Any], op: Op[Any] | None = None) -> None:
    """Register ``fn`` to run once under a key C chooses: an address it passes back as
    ``cb_arg`` (``spdk_nvme_connect_async`` passes its options pointer).  Addresses
    never collide with the small keys :func:`once` counts out."""
    if key in _once or key in _persistent:
        raise RuntimeError(f"callback key {key:#x} is registered already")
    _once[key] = (fn, op)


def forget(key: int) -> None:
    """Drop a registration (a one-shot whose C call failed, or a persistent one)."""
    _once.pop(key, None)
    _persistent.pop(key, None)


def pending() -> int:
    """How many registrations wait for their callback (one-shot and persistent): a
    number that must come back to where it was once what was started has finished
    (a leak check)."""
    return len(_once) + len(_persistent)


# --------------------------------------------------------------------------- status completions
# SPDK calls that report an int status (``rc``) through their callback: one Op each.
# Several complete synchronously, before they return, so the Op and its key exist first.


def status_op(
    what: str, obj: object = None, after: Callable[[], None] | None = None
) -> tuple[Op[Any], int]:
    """An ``Op`` that a status completion finishes, and the key to pass SPDK as ``cb_arg``.

    The completion calls its entry with ``(op, status)``, or ``(op, status, value)``
    when it reports a value too (a handle, an id: ``_on_ctx_value_status``); the ``Op``
    gets the value (``None`` if none), or an ``SpdkError`` for a non-zero status.
    ``after()`` runs first in the completion (to release what the operation held)."""
    op: Op[Any] = Op(what)

    def done(op: Op[Any], status: int, value: Any = None) -> None:
        if after is not None:
            after()
        if status == 0:
            op.set_result(value)
        else:
            op.set_exception(SpdkError(abs(status) or errno.EIO, what, obj))

    return op, once(done, op)


def submit(what: str, obj: object, call: Callable[[int], int | None]) -> Op[None]:
    """Start ``call(key)`` with a fresh completion key; return the ``Op`` to await.

    ``call`` returns SPDK's rc (``None`` for a ``void`` function); a non-zero rc
    means SPDK will not call back: the key is dropped and ``SpdkError`` raised.
    """
    op, key = status_op(what, obj)
    try:
        rc = call(key)
    except BaseException:
        forget(key)
        raise
    if rc:
        forget(key)
        raise SpdkError(abs(rc), what, obj)
    return op


_fail = _loop.callback_failed


def _take(key: int | None) -> Entry | None:
    global stale_callbacks
    entry = _once.pop(key, None) if key is not None else None
    if entry is None:
        entry = _persistent.get(key) if key is not None else None
        if entry is None:
            stale_callbacks += 1
    return entry


# --------------------------------------------------------------------------- trampolines
# One per C signature.  Each looks up its key, calls the entry, and catches everything.


def _on_ctx(ctx: int | None) -> None:
    """``void (*)(void *ctx)``: messages, fini callbacks, io-wait retries."""
    entry: Entry | None = None
    try:
        entry = _take(ctx)
        if entry is not None:
            entry[0]()
    except BaseException as exc:
        _fail(exc, "message callback", entry[1] if entry is not None else None)


def _one_shot(what: str, ctx_at: int, *args_at: int, op: bool = False) -> Callable[..., None]:
    """The trampoline of a one-shot completion: the key is argument ``ctx_at``; the
    entry is called with the arguments at ``args_at`` (a pointer, an id, a status),
    after its ``Op`` if ``op`` (a status completion, see :func:`status_op`).
    (The hot callbacks, pollers and I/O completions, are written out below.)"""

    def trampoline(*args: Any) -> None:
        entry: Entry | None = None
        try:
            entry = _take(args[ctx_at])
            if entry is not None:
                values = [args[i] for i in args_at]
                if op:
                    entry[0](entry[1], *values)
                else:
                    entry[0](*values)
        except BaseException as exc:
            _fail(exc, what, entry[1] if entry is not None else None)

    trampoline.__qualname__ = f"one-shot {what} trampoline"
    return trampoline


#: ``void (*)(int rc, void *ctx)``: subsystem init, config load.  A status completion:
#: the entry sees ``(op, rc)`` (see :func:`status_op`).
_on_rc_ctx = _one_shot("completion callback", 1, 0, op=True)


def _on_ctx_status(ctx: int | None, status: int) -> None:
    """``void (*)(void *ctx, int status)`` (context first, unlike ``_on_rc_ctx``): nvmf
    target and poll group destroy, transport add, every blobstore and blob operation
    that reports a status, and blob I/O (a hot path).  The entry sees ``(op, status)``."""
    entry: Entry | None = None
    try:
        entry = _once.pop(ctx, None) if ctx is not None else None
        if entry is None:
            _take(None)  # counts the stale callback
            return
        entry[0](entry[1], status)
    except BaseException as exc:
        _fail(exc, "status completion", entry[1] if entry is not None else None)


#: ``spdk_nvme_attach_cb(cb_ctx, trid, ctrlr, opts)``: the entry sees the controller
#: pointer; its key is the options pointer given to ``spdk_nvme_connect_async``.
_on_nvme_attach = _one_shot("NVMe attach callback", 0, 2)
#: ``(void *ctx, <pointer or id> value, int status)``: blobstore load/init, blob open and
#: iteration (a handle), blob create, snapshot, clone and the super blob (an id).  A
#: status completion with a value: the entry sees ``(op, status, value)``.
_on_ctx_value_status = _one_shot("blobstore completion", 0, 2, 1, op=True)
#: ``spdk_nvmf_subsystem_state_change_done(subsystem, ctx, status)``.
_on_subsystem_state = _one_shot("nvmf subsystem state change", 1, 2, op=True)
#: ``spdk_nvmf_transport_create_done_cb(ctx, transport or NULL)``.
_on_transport_created = _one_shot("nvmf transport create", 0, 1)


def _on_poll(ctx: int | None) -> int:
    """``int (*)(void *ctx)``: pollers.  A poller that raises is muted (its error is
    reported once; SPDK keeps calling an entry that is gone, which reports idle)."""
    entry: Entry | None = None
    try:
        entry = _persistent.get(ctx) if ctx is not None else None
        if entry is None:
            return 0
        return 1 if entry[0]() else 0
    except BaseException as exc:
        if ctx is not None:
            _persistent.pop(ctx, None)
        _fail(exc, "poller", entry[1] if entry is not None else None)
        return 0


def _on_bdev_event(event_type: int, bdev: Any, ctx: int | None) -> None:
    """``spdk_bdev_event_cb_t``: hot-remove, resize, media events (persistent)."""
    entry: Entry | None = None
    try:
        entry = _persistent.get(ctx) if ctx is not None else None
        if entry is not None:
            entry[0](event_type)
    except BaseException as exc:
        _fail(exc, "bdev event callback", entry[1] if entry is not None else None)


class _BdevIoPtr(ctypes.c_void_p):
    """``struct spdk_bdev_io *`` as a callback argument.

    A subclass of ``c_void_p`` is not converted to a Python int, so it can be
    passed straight back to ``spdk_bdev_free_io`` with no conversion.
    """


_free_io = fast("spdk_bdev_free_io", None)


def _on_bdev_io(bdev_io: _BdevIoPtr, success: bool, ctx: int | None) -> None:
    """``spdk_bdev_io_completion_cb``: the entry sees ``(op, success, bdev_io)``; we free the io.

    Persistent entries (IoSlots, stream slots: the hot paths) are looked up first,
    then one-shot I/Os; ``_take``, inlined."""
    entry: Entry | None = None
    try:
        key = ctx or 0  # 0 (NULL) is no key
        entry = _persistent.get(key)
        if entry is None:
            entry = _once.pop(key, None)
            if entry is None:
                _take(None)  # counts the stale callback
                return
        entry[0](entry[1], success, bdev_io)
    except BaseException as exc:
        _fail(exc, "bdev I/O completion", entry[1] if entry is not None else None)
    finally:
        _free_io(bdev_io)


def _no_hook(addr: int) -> None:
    return None


def no_hook() -> None:
    return None


#: Called with the address of every SPDK thread created (set by :mod:`spdk_io.thread`).
new_thread_hook: Callable[[int], None] = _no_hook
#: Called by ``void (*)(void)`` callbacks: the app framework's shutdown (set by spdk_io.app).
shutdown_hook: Callable[[], None] = no_hook


def _on_void() -> None:
    """``void (*)(void)``: no context argument, so it calls the one hook there is."""
    try:
        shutdown_hook()
    except BaseException as exc:
        _fail(exc, "shutdown callback")


def _on_new_thread(thread: Any) -> int:
    """``spdk_new_thread_fn``: SPDK created a thread; someone must poll it."""
    try:
        new_thread_hook(ctypes.cast(thread, ctypes.c_void_p).value or 0)
    except BaseException as exc:
        _fail(exc, "new thread callback")
        return -1
    return 0


# --- nvme: the NVMe driver's callbacks (spdk_io.nvme)


def _on_nvme_cmd(ctx: int | None, cpl: int) -> None:
    """``spdk_nvme_cmd_cb``: the entry sees ``(op, cpl_address)``; one-shot commands and
    the persistent entries of command slots."""
    entry: Entry | None = None
    try:
        # _take, inlined (the NVMe hot path): slots first, then one-shot commands.
        key = ctx or 0  # 0 (NULL) is no key
        entry = _persistent.get(key)
        if entry is None:
            entry = _once.pop(key, None)
            if entry is None:
                _take(None)  # counts the stale callback
                return
        entry[0](entry[1], cpl)
    except BaseException as exc:
        _fail(exc, "NVMe command completion", entry[1] if entry is not None else None)


def _on_nvme_timeout(ctx: int | None, ctrlr: Any, qpair: int | None, cid: int) -> None:
    """``spdk_nvme_timeout_cb`` (persistent): the entry sees ``(qpair_address, cid)``;
    the qpair is ``None`` for an admin command."""
    entry: Entry | None = None
    try:
        entry = _persistent.get(ctx) if ctx is not None else None
        if entry is not None:
            entry[0](qpair, cid)
    except BaseException as exc:
        _fail(exc, "NVMe timeout callback", entry[1] if entry is not None else None)


#: The scatter-gather lists of vectored commands, by the command's key (their ``cb_arg``).
#: Weak: a list lives as long as its command's ``Op`` keeps it (``op.keep``), so an entry
#: goes away by itself when the command completes or SPDK refuses it.
_sgls: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()


def sgl_at(key: int, sgl: Any) -> None:
    """Serve SPDK's SGL callbacks for the command registered under ``key`` from ``sgl``:
    an object with ``reset(offset)`` and ``next() -> (address, length)`` (length < 2**32),
    kept alive by the command's ``Op`` until it completes."""
    _sgls[key] = sgl


_u64_at = ctypes.c_uint64.from_address
_u32_at = ctypes.c_uint32.from_address


def _on_nvme_reset_sgl(ctx: int | None, offset: int) -> None:
    """``spdk_nvme_req_reset_sgl_cb``: the next element starts ``offset`` bytes in."""
    try:
        sgl = _sgls.get(ctx) if ctx is not None else None
        if sgl is not None:
            sgl.reset(offset)
    except BaseException as exc:
        _fail(exc, "NVMe SGL reset callback")


def _on_nvme_next_sge(ctx: int | None, address: int | None, length: int | None) -> int:
    """``spdk_nvme_req_next_sge_cb``: write the current element's address and length and
    advance; -1 (SPDK fails the command) if there is no list under ``ctx``."""
    try:
        sgl = _sgls.get(ctx) if ctx is not None else None
        if sgl is None or not address or not length:
            return -1
        addr, n = sgl.next()
        _u64_at(address).value = addr
        _u32_at(length).value = n
        return 0
    except BaseException as exc:
        _fail(exc, "NVMe SGL callback")
        return -1


nvme_attach_cb = g.spdk_nvme_attach_cb(_on_nvme_attach)
#: The command completion thunk: ``cb_arg`` and the completion's address as ints.
nvme_cmd_thunk = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)(_on_nvme_cmd)
nvme_cmd_cb = ctypes.cast(nvme_cmd_thunk, g.spdk_nvme_cmd_cb)
_VP = ctypes.c_void_p
nvme_timeout_thunk = ctypes.CFUNCTYPE(None, _VP, _VP, _VP, ctypes.c_uint16)(_on_nvme_timeout)
nvme_timeout_cb = ctypes.cast(nvme_timeout_thunk, g.spdk_nvme_timeout_cb)
#: The SGL callbacks of vectored commands (pointers as ints, see :func:`sgl_at`).
nvme_reset_sgl_thunk = ctypes.CFUNCTYPE(None, _VP, ctypes.c_uint32)(_on_nvme_reset_sgl)
nvme_reset_sgl_cb = ctypes.cast(nvme_reset_sgl_thunk, g.spdk_nvme_req_reset_sgl_cb)
nvme_next_sge_thunk = ctypes.CFUNCTYPE(ctypes.c_int, _VP, _VP, _VP)(_on_nvme_next_sge)
nvme_next_sge_cb = ctypes.cast(nvme_next_sge_thunk, g.spdk_nvme_req_next_sge_cb)

# ------------------------------------------------------------------ the trampolines, as C sees them
ctx_cb = g.spdk_msg_fn(_on_ctx)
new_thread_cb = g.spdk_new_thread_fn(_on_new_thread)
void_cb = g.spdk_app_shutdown_cb(_on_void)
rc_ctx_cb = g.spdk_subsystem_init_fn(_on_rc_ctx)
poll_cb = g.spdk_poller_fn(_on_poll)
bdev_event_cb = g.spdk_bdev_event_cb_t(_on_bdev_event)
#: The C type of ``spdk_bdev_io_completion_cb`` as the hot paths bind it.
_BdevIoFn = ctypes.CFUNCTYPE(None, _BdevIoPtr, ctypes.c_bool, ctypes.c_void_p)
#: The completion thunk, for hot paths that call SPDK without argtypes conversion.
bdev_io_thunk = _BdevIoFn(_on_bdev_io)


def bdev_io_callback(fn: Callable[[Any, bool, int | None], None]) -> Any:
    """A ``spdk_bdev_io_completion_cb`` that calls ``fn(bdev_io, success, cb_arg)``
    directly, for :class:`~spdk_io.bdev.IoStream` only: the one exception to one
    trampoline per signature, because there the dispatch is the cost (measured: the
    shared trampoline's key lookup and its extra Python frame are ~150 ns, about 10 %
    of a streamed I/O on a null bdev, ``benchmarks/bench_gap.py --profile``).  ``fn`` must catch
    everything and free the ``bdev_io`` itself (``free_bdev_io``); its owner keeps the
    returned object alive while C may call it, and hands it to :func:`retain` if that
    can no longer be known."""
    return _BdevIoFn(fn)


#: C callback objects C may still call although their owner is gone (see :func:`retain`).
_retained: list[object] = []


def retain(obj: object) -> None:
    """Keep ``obj`` (a C callback object) alive for the life of the process: its owner
    was abandoned with I/O SPDK may never complete (its thread was destroyed)."""
    _retained.append(obj)


#: ``spdk_bdev_free_io``, for the completions of :func:`bdev_io_callback`.
free_bdev_io = _free_io
#: The same C thunks, typed as the generated callback types that SPDK's prototypes expect.
bdev_io_cb = ctypes.cast(bdev_io_thunk, g.spdk_bdev_io_completion_cb)


def _address(fn: Any) -> ctypes.c_void_p:
    return ctypes.c_void_p(ctypes.cast(fn, ctypes.c_void_p).value)


# The hot completions' addresses, for submissions bound with ``void *`` argtypes: a
# prebuilt ``c_void_p`` passes as is, a CFUNCTYPE object is converted on every call.
bdev_io_addr = _address(bdev_io_thunk)
nvme_cmd_addr = _address(nvme_cmd_thunk)
io_wait_cb = ctypes.cast(ctx_cb, g.spdk_bdev_io_wait_cb)


# --- nvmf: NVMe-oF target completions (spdk_io.nvmf) ---------------------------------


ctx_status_cb = g.spdk_nvmf_tgt_destroy_done_fn(_on_ctx_status)


# --- blob: the blobstore's completions (spdk_io.blob) --------------------------------
# ``spdk_bs_op_complete`` and ``spdk_blob_op_complete`` are ``_on_ctx_status``; the
# handle and id completions are ``_on_ctx_value_status``.  One C thunk each, cast to
# the prototypes' types.

ctx_status_addr = _address(ctx_status_cb)  # blob read and write submit with it
bs_op_cb = ctypes.cast(ctx_status_cb, g.spdk_bs_op_complete)
blob_op_cb = ctypes.cast(ctx_status_cb, g.spdk_blob_op_complete)
_value_status_thunk = ctypes.CFUNCTYPE(None, _VP, _VP, ctypes.c_int)(_on_ctx_value_status)
bs_handle_cb = ctypes.cast(_value_status_thunk, g.spdk_bs_op_with_handle_complete)
blob_handle_cb = ctypes.cast(_value_status_thunk, g.spdk_blob_op_with_handle_complete)
_id_status_thunk = ctypes.CFUNCTYPE(None, _VP, ctypes.c_uint64, ctypes.c_int)(_on_ctx_value_status)
blob_id_cb = ctypes.cast(_id_status_thunk, g.spdk_blob_op_with_id_complete)


def _on_xattr_value(
    ctx: int | None, name: bytes | None, value: int | None, length: int | None
) -> None:
    """``spdk_blob_xattr_opts.get_value`` (persistent, while its operation runs): the
    entry maps the name to ``(address, length)`` of a value it keeps alive; the
    trampoline writes them where SPDK asks.  An unknown name yields an empty value."""
    entry: Entry | None = None
    try:
        entry = _persistent.get(ctx) if ctx is not None else None
        addr, n = entry[0](name or b"") if entry is not None else (0, 0)
        if value:
            ctypes.c_void_p.from_address(value).value = addr or None
        if length:
            ctypes.c_size_t.from_address(length).value = n
    except BaseException as exc:
        _fail(exc, "blob xattr value callback", entry[1] if entry is not None else None)


#: The ``get_value`` of ``struct spdk_blob_xattr_opts`` (pointers as ints, the name as bytes).
xattr_value_thunk = ctypes.CFUNCTYPE(None, _VP, ctypes.c_char_p, _VP, _VP)(_on_xattr_value)
subsystem_state_cb = g.spdk_nvmf_subsystem_state_change_done(_on_subsystem_state)
transport_created_cb = g.spdk_nvmf_transport_create_done_cb(_on_transport_created)


# --- stats: statistics completions and iterations (spdk_io.stats) ---------------------

#: ``spdk_bdev_get_device_stat_cb(bdev, stat, ctx, rc)``: a status completion (see
#: :func:`status_op`), the entry sees ``(op, rc)``.
_on_device_stat = _one_shot("bdev device stat", 2, 3, op=True)
device_stat_cb = g.spdk_bdev_get_device_stat_cb(_on_device_stat)
#: ``spdk_bdev_histogram_status_cb(ctx, status)``: ``_on_ctx_status``.
histogram_status_cb = ctypes.cast(ctx_status_cb, g.spdk_bdev_histogram_status_cb)
#: ``spdk_bdev_histogram_data_cb(ctx, status, histogram)``: a status completion, the
#: entry sees ``(op, status)`` (the histogram is the one the caller passed).
_on_histogram_data = _one_shot("bdev histogram", 0, 1, op=True)
histogram_data_cb = g.spdk_bdev_histogram_data_cb(_on_histogram_data)

# Iterations (``spdk_for_each_thread``, ``spdk_bdev_for_each_channel``) call a function
# on every thread or channel, then a completion on the caller's thread, with one
# ``ctx``.  Their entry is persistent (see :func:`persistent`): each visit calls
# ``fn()`` (threads: on the visited thread) or ``fn(channel_address)`` (channels); the
# completion drops the entry and finishes its ``Op`` (``SpdkError`` for a non-zero
# status).  Visits may run on other OS threads: ``fn`` records what it finds, and its
# own errors, for the caller to read once the ``Op`` is done; it must not finish the Op.


def _end_iteration(ctx: int | None, status: int, what: str) -> None:
    entry: Entry | None = None
    try:
        entry = _persistent.pop(ctx, None) if ctx is not None else None
        op = entry[1] if entry is not None else None
        if op is None:
            _take(None)  # counts the stale callback
        elif not op.done():
            if status == 0:
                op.set_result(None)
            else:
                op.set_exception(SpdkError(abs(status), what))
    except BaseException as exc:
        _fail(exc, what, entry[1] if entry is not None else None)


async def iterate(what: str, visit: Callable[..., None], start: Callable[[int], object]) -> None:
    """Run an SPDK iteration: ``start(key)`` starts it with the key of a persistent entry
    (``spdk_for_each_thread(each_thread_cb, key, each_thread_done_cb)`` or
    ``spdk_bdev_for_each_channel(bdev, each_channel_cb, key, each_channel_done_cb)``);
    ``visit`` runs on each thread (``visit()``) or channel (``visit(channel_address)``),
    on the thread visited; the end finishes the awaited ``Op``.  What ``visit`` raises
    (an ``Exception``) is kept, the iteration goes on, and the first is raised here once
    it is over.  Anything else a visit raises (``KeyboardInterrupt``) goes to the
    visited thread's loop; a channel visit's also ends the iteration with ``-EIO``."""
    from spdk_io import cores  # cores imports this module: look it up when called

    cores.refuse_iteration(what)
    errors: list[BaseException] = []

    def guarded(*args: Any) -> None:
        try:
            visit(*args)
        except Exception as exc:
            errors.append(exc)

    op: Op[None] = Op(what)
    key = persistent(guarded, op)
    try:
        start(key)
    except BaseException:
        forget(key)
        raise
    await op
    if errors:
        raise errors[0]


def _on_each_thread(ctx: int | None) -> None:
    """``spdk_for_each_thread``'s ``fn`` (``spdk_msg_fn``): one visit (see the module's
    docstring for why it is not :func:`_on_ctx`)."""
    try:
        entry = _persistent.get(ctx) if ctx is not None else None
        if entry is not None:
            entry[0]()
    except BaseException as exc:
        _fail(exc, "spdk_for_each_thread visit")


def _on_each_thread_done(ctx: int | None) -> None:
    """``spdk_for_each_thread``'s ``cpl``: the end of the iteration."""
    _end_iteration(ctx, 0, "spdk_for_each_thread")


_channel_continue = fast("spdk_bdev_for_each_channel_continue", None, [_VP, ctypes.c_int])


def _on_each_channel(i: int | None, bdev: Any, ch: int | None, ctx: int | None) -> None:
    """``spdk_bdev_for_each_channel_msg``: one visit, then on to the next channel (with
    ``-EIO`` if ``fn`` raised, which ends the iteration with that status; what it raised
    goes to this OS thread's loop, as from ``_on_each_thread``)."""
    status = 0
    try:
        entry = _persistent.get(ctx) if ctx is not None else None
        if entry is not None:
            entry[0](ch or 0)
    except BaseException as exc:
        status = -errno.EIO
        _fail(exc, "spdk_bdev_for_each_channel visit")
    finally:
        _channel_continue(i, status)


def _on_each_channel_done(bdev: Any, ctx: int | None, status: int) -> None:
    """``spdk_bdev_for_each_channel_done``: the end of the iteration."""
    _end_iteration(ctx, status, "spdk_bdev_for_each_channel")


each_thread_cb = g.spdk_msg_fn(_on_each_thread)
each_thread_done_cb = g.spdk_msg_fn(_on_each_thread_done)
_each_channel_thunk = ctypes.CFUNCTYPE(None, _VP, _VP, _VP, _VP)(_on_each_channel)
each_channel_cb = ctypes.cast(_each_channel_thunk, g.spdk_bdev_for_each_channel_msg)
each_channel_done_cb = g.spdk_bdev_for_each_channel_done(_on_each_channel_done)
