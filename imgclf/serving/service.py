"""`Predictor`: runs a signature for the REST and gRPC front ends, batched or not, with deadlines.

    >>> predictor = Predictor(manager, metrics, batching_options=None)
    >>> outputs = await predictor.predict(servable, signature, inputs, deadline=loop.time() + 30)
"""

import asyncio
import concurrent.futures
import os

from imgclf.serving.batching import Batcher, batch_rows
from imgclf.serving.status import deadline_exceeded, unavailable

#: Unbatched requests allowed to wait for a thread at once; more are refused with UNAVAILABLE
#: instead of piling up in memory.
MAX_PENDING_UNBATCHED = 4096


class Predictor:
    """Runs signatures on worker threads so the event loop stays free for I/O."""

    def __init__(self, manager, metrics, batching_options=None, num_threads=0):
        self.manager = manager
        self.metrics = metrics
        self.batching_options = batching_options
        self._executor = concurrent.futures.ThreadPoolExecutor(
            num_threads or os.cpu_count() or 1, thread_name_prefix="predict")
        self._batcher = None
        self._pending = 0

    async def start(self):
        if self.batching_options is not None:
            self._batcher = Batcher(self.batching_options, self.metrics)

    async def predict(self, servable, signature, inputs, deadline):
        """Outputs (name -> numpy array) of `signature` for checked `inputs`.

        `deadline` is an event-loop time (`loop.time()`) or None.
        """
        rows = batch_rows(signature, inputs) if self._batcher is not None else None
        if rows is not None:
            return await self._batcher.run(servable, signature, inputs, deadline, rows)
        loop = asyncio.get_running_loop()
        if self._pending >= MAX_PENDING_UNBATCHED:
            raise unavailable("Too many requests are waiting; try again later")
        self._pending += 1
        try:
            future = loop.run_in_executor(self._executor, servable.run, signature, inputs)
            timeout = None if deadline is None else max(deadline - loop.time(), 0)
            try:
                return await asyncio.wait_for(future, timeout)
            except asyncio.TimeoutError:
                raise deadline_exceeded() from None
        finally:
            self._pending -= 1

    async def close(self):
        """Finish queued work, then stop the threads."""
        if self._batcher is not None:
            await self._batcher.close()
        self._executor.shutdown(wait=True)
