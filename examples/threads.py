"""Several SPDK threads on several OS threads, talking through messages.

python examples/threads.py
"""

from __future__ import annotations

import spdk_io
from spdk_io import SpdkThread, ThreadHandle
from spdk_io.thread import current_thread


async def worker(app: ThreadHandle, n: int) -> str:
    # Runs on its own SPDK thread and OS thread; asks the app thread for something.
    await spdk_io.sleep(0.01 * n)
    answer = await app.call(lambda: f"hello worker {n} from {current_thread().name}")
    return f"{current_thread().name}: {answer}"


async def main() -> None:
    app = ThreadHandle.current()
    handles = [SpdkThread.spawn(worker, app, i, name=f"worker{i}") for i in range(3)]
    for h in handles:
        print(await h)


if __name__ == "__main__":
    spdk_io.run(main(), name="threads")
