"""An asyncio micro-batcher: concurrent requests for one model share a forward pass.

Each request puts its texts on the model's queue and awaits a future. One task per model takes the
first waiting request, gathers more for at most ``max_wait`` seconds or until ``max_batch`` texts,
runs the model once in a worker thread (the event loop keeps answering meanwhile), and hands each
request its own rows. While a batch runs, new requests queue up and form the next one, so under load
batches fill without waiting.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor

import numpy as np

logger = logging.getLogger(__name__)

_Item = tuple[list[str], asyncio.Future]


class MicroBatcher:
    """Gathers the texts of concurrent :meth:`submit` calls into batches for ``predict``.

    Example:
        >>> batcher = MicroBatcher(clf.predict_proba, executor, max_batch=64, max_wait=0.005)  # doctest: +SKIP
        >>> probs = await batcher.submit(["I lost my card"])                                  # doctest: +SKIP
    """

    def __init__(self, predict: Callable[[list[str]], np.ndarray], executor: Executor, max_batch: int,
                 max_wait: float) -> None:
        self.predict = predict
        self.executor = executor
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.batches = 0
        """Forward calls made so far (each serves one or more requests)."""
        self.requests = 0
        """Requests answered so far."""
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task | None = None

    async def submit(self, texts: list[str]) -> np.ndarray:
        """The probabilities of ``texts`` (rows in order), computed in a batch with other requests."""
        loop = asyncio.get_running_loop()
        self._ensure_running(loop)
        future: asyncio.Future = loop.create_future()
        self._queue.put_nowait((texts, future))
        return await future

    def _ensure_running(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the batching task on this loop (again, if a test client runs a fresh loop)."""
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._run(self._queue))

    async def stop(self) -> None:
        """Cancel the batching task (requests still waiting get a cancelled future)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self, queue: asyncio.Queue[_Item]) -> None:
        carry: _Item | None = None
        while True:
            first = carry or await queue.get()
            batch, carry = await self._gather(queue, first)
            await self._answer(batch)

    async def _gather(self, queue: asyncio.Queue[_Item], first: _Item) -> tuple[list[_Item], _Item | None]:
        """``first`` plus requests arriving within ``max_wait`` while the batch has room; the request
        that would overflow the batch is carried into the next one."""
        loop = asyncio.get_running_loop()
        batch, size = [first], len(first[0])
        deadline = loop.time() + self.max_wait
        while size < self.max_batch:
            try:
                item = queue.get_nowait() if not queue.empty() else \
                    await asyncio.wait_for(queue.get(), max(0.0, deadline - loop.time()))
            except (asyncio.TimeoutError, TimeoutError):
                break
            if size + len(item[0]) > self.max_batch:
                return batch, item
            batch.append(item)
            size += len(item[0])
        return batch, None

    async def _answer(self, batch: list[_Item]) -> None:
        """Run the batch in the worker thread and give each request its rows (or the error)."""
        live = [(texts, future) for texts, future in batch if not future.done()]  # a client may have left
        if not live:
            return
        texts = [text for item_texts, _ in live for text in item_texts]
        self.batches += 1
        try:
            probs = await asyncio.get_running_loop().run_in_executor(self.executor, self.predict, texts)
        except Exception as exc:  # noqa: BLE001 - every waiting request gets the error, the loop goes on
            logger.exception("inference failed for a batch of %d texts", len(texts))
            for _, future in live:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for item_texts, future in live:
            if not future.done():
                future.set_result(probs[start:start + len(item_texts)])
            start += len(item_texts)
        self.requests += len(live)
