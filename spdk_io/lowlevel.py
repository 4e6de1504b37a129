"""The machinery under the typed layer, for code that extends it.

* :class:`Op` - a pending operation, the one thing a task can wait on; complete it
  from a C callback with ``set_result``/``set_exception``;
* :class:`Loop`, :func:`current_loop` - the event loop of an SPDK thread;
* :class:`Resource` - the lifecycle base of every object that owns an SPDK handle;
* :class:`Poller` - a Python callable run by SPDK as a poller;
* :func:`on_release` - a step run when an SPDK thread releases what it holds;
* :class:`interrupts_deferred` - Ctrl-C recorded, not raised, inside a block.

Application code rarely needs these: ``spdk_io`` itself exports what it does.
"""

from spdk_io.loop import Loop as Loop
from spdk_io.loop import Op as Op
from spdk_io.loop import current_loop as current_loop
from spdk_io.loop import interrupts_deferred as interrupts_deferred
from spdk_io.resource import Resource as Resource
from spdk_io.thread import Poller as Poller
from spdk_io.thread import on_release as on_release

__all__ = [
    "Loop",
    "Op",
    "Poller",
    "Resource",
    "current_loop",
    "interrupts_deferred",
    "on_release",
]
