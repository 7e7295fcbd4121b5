"""Waiting in tests: poll a condition until it holds or a deadline passes, never a bare sleep.

`eventually` (plain functions) and `eventually_async` (in a running event loop; the condition may be a coroutine
function) return the condition's first truthy result, or raise AssertionError naming what was awaited and, when
`context` is given, what was seen instead.
"""
from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, TypeVar
from collections.abc import Callable

T = TypeVar("T")

INTERVAL = 0.02   # seconds between polls


def eventually(condition: Callable[[], T], timeout: float, what: str, *, interval: float = INTERVAL,
               context: Callable[[], Any] | None = None) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(_failure(what, timeout, context))
        time.sleep(interval)


async def eventually_async(condition: Callable[[], Any], timeout: float, what: str, *,
                           interval: float = INTERVAL, context: Callable[[], Any] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(_failure(what, timeout, context))
        await asyncio.sleep(interval)


def _failure(what: str, timeout: float, context: Callable[[], Any] | None) -> str:
    message = f"not {what} after {timeout} s"
    return f"{message}; seen: {context()}" if context is not None else message
