"""The NVMe-oF target side, in-process: a :class:`Target` with transports, listeners
and :class:`Subsystem` s exporting bdevs as namespaces.

    async def main() -> None:
        await bdev_modules.create_malloc("Malloc0", num_blocks=16384)
        async with await Target.create("py_tgt") as target:
            await target.add_transport("TCP")
            sub = await target.create_subsystem("nqn.2016-06.io.spdk:cnode1",
                                                serial="SPDK001", allow_any_host=True)
            await sub.add_namespace("Malloc0")
            await sub.add_listener(TransportId.tcp("127.0.0.1", 4420))
            await sub.start()
            await spdk_io.sleep(60)           # hosts connect and do I/O meanwhile

Only NVMe/TCP is testable on the machines this project is developed on; RDMA goes
through the same API and is untested here.
"""

from spdk_io.nvme.transport import TransportId
from spdk_io.nvmf.options import (
    DISCOVERY_NQN,
    DiscoveryFilter,
    TargetOptions,
    TransportOptions,
    check_nqn,
)
from spdk_io.nvmf.subsystem import Namespace, Subsystem, SubsystemState
from spdk_io.nvmf.target import Target

__all__ = [
    "DISCOVERY_NQN",
    "DiscoveryFilter",
    "Namespace",
    "Subsystem",
    "SubsystemState",
    "Target",
    "TargetOptions",
    "TransportId",
    "TransportOptions",
    "check_nqn",
]
