"""aetcd on an event loop of its own, in a thread of its own: the etcd connection of a `vamp run` replica.

The control plane's store is synchronous (its callers, the engine and the API, call it from the platform's event
loop, as they call SQLite), so a store call blocks its caller until etcd answers: `run` hands the call to this
thread's loop and waits at most `timeout` seconds. The election's long-lived work (keep-alives, watches) runs
on the same loop (`submit`), where a busy platform loop cannot delay a keep-alive. Every failure to reach the
store is `StoreUnavailable`: the API answers it 503, and the same request may succeed later.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from gateway import STORE_ERRORS, EtcdClient, StoreAddress, describe_store_error
from gateway.common.errors import Unavailable

T = TypeVar("T")

STORE_TIMEOUT = 3.0         # seconds a store call may take before it counts as failed


class StoreUnavailable(Unavailable):
    """The store could not be reached, or did not answer in time: nothing changed."""


class EtcdThread:
    def __init__(self, address: StoreAddress, *, timeout: float = STORE_TIMEOUT) -> None:
        self.address = address
        self.timeout = timeout
        self.client = EtcdClient(address, timeout=timeout)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="vamp etcd", daemon=True)
        self._thread.start()
        self._closed = False

    def connect(self) -> None:
        """Open the channel (and log in, with credentials): StoreUnavailable when no endpoint answers."""
        self.run(lambda client: client.connect())

    def run(self, call: Callable[[EtcdClient], Awaitable[T]], timeout: float | None = None) -> T:
        """`call(client)` on this thread's loop; its result. Blocks the calling thread (never this one)."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("EtcdThread.run called from its own thread: await the call instead")
        if self._closed:
            raise StoreUnavailable(f"the store at {self.address} is closed")
        future = asyncio.run_coroutine_threadsafe(_invoke(call, self.client), self.loop)
        try:
            return future.result(self.timeout if timeout is None else timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise StoreUnavailable(f"the store at {self.address} did not answer within {self.timeout:g} s") from None
        except STORE_ERRORS as exc:
            raise StoreUnavailable(f"the store at {self.address} cannot be reached: "
                                   f"{describe_store_error(exc)}") from exc

    async def call(self, call: Callable[[EtcdClient], Awaitable[T]]) -> T:
        """`run` for a coroutine of another event loop: waits without blocking that loop."""
        future = asyncio.run_coroutine_threadsafe(_invoke(call, self.client), self.loop)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout)
        except TimeoutError:
            raise StoreUnavailable(f"the store at {self.address} did not answer within {self.timeout:g} s") from None
        except STORE_ERRORS as exc:
            raise StoreUnavailable(f"the store at {self.address} cannot be reached: "
                                   f"{describe_store_error(exc)}") from exc

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run a long-lived coroutine (the election) on this thread's loop."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def close(self) -> None:
        """Cancel what runs on the loop, close the channel and end the thread."""
        if self._closed:
            return
        self._closed = True

        async def shut() -> None:
            current = asyncio.current_task()
            others = [task for task in asyncio.all_tasks() if task is not current]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            try:
                await self.client.close()
            except STORE_ERRORS:
                pass
        try:
            asyncio.run_coroutine_threadsafe(shut(), self.loop).result(self.timeout + 2)
        except (concurrent.futures.TimeoutError, RuntimeError):
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(self.timeout)
        if not self._thread.is_alive():
            self.loop.close()


async def _invoke(call: Callable[[EtcdClient], Awaitable[T]], client: EtcdClient) -> T:
    """Calls `call` on the etcd loop itself: a gRPC call belongs to the loop it is made on."""
    return await call(client)
