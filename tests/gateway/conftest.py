"""Fixtures of the gateway's tests that run it in the test's own event loop."""
from __future__ import annotations

import asyncio

import pytest

from gateway.runtime.runtime import Runtime


@pytest.fixture
async def runtime():
    """A `Runtime` (the gateway without its process) in the test's event loop, closed afterwards."""
    served = Runtime(asyncio.get_running_loop())
    yield served
    await served.close()
