"""One number from a real Prometheus: `query_scalar` runs an instant PromQL query through Prometheus' HTTP API
(`POST /api/v1/query`) for a canary check (`provider: prometheus`, docs/canary.md, "Prometheus checks").

A query must give one value: a scalar, or a vector of one sample (`sum(...)` makes one of many). An empty vector,
or NaN (a ratio of nothing to nothing), is no data: None. Anything else that goes wrong — Prometheus unreachable
or slow, a query it refuses, several series — raises `PrometheusError` saying what happened.
"""
from __future__ import annotations

import math
from typing import Any

import aiohttp


class PrometheusError(Exception):
    """The query gave no usable answer; the message says why (and never holds credentials)."""


def query_url(address: str) -> str:
    """`127.0.0.1:9090` or `http://prometheus:9090/prefix` -> the URL of the instant-query endpoint."""
    base = address.strip().rstrip("/")
    if "://" not in base:
        base = f"http://{base}"
    return f"{base}/api/v1/query"


async def query_scalar(address: str, query: str, *, timeout: float) -> float | None:
    """The value of the instant query `query` now, None when it has no data."""
    url = query_url(address)
    try:
        async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
                    session.post(url, data={"query": query}) as response):
            status = response.status
            try:
                body = await response.json(content_type=None)
            except ValueError:
                raise PrometheusError(f"Prometheus at {address} answered HTTP {status} without JSON "
                                      f"(is it Prometheus?)") from None
    except TimeoutError:
        raise PrometheusError(f"Prometheus at {address} did not answer within {timeout:g}s") from None
    except aiohttp.ClientError as error:
        raise PrometheusError(f"cannot query Prometheus at {address}: {error}") from None
    return _value(body, status, address, query)


def _value(body: Any, status: int, address: str, query: str) -> float | None:
    if not isinstance(body, dict):
        raise PrometheusError(f"Prometheus at {address} answered HTTP {status} with an unexpected body")
    if body.get("status") != "success":
        if "errorType" in body:
            raise PrometheusError(f"Prometheus refused the query {query!r}: {body['errorType']}: "
                                  f"{body.get('error', 'no reason given')}")
        raise PrometheusError(f"{address} answered HTTP {status} ({body.get('error', 'no reason given')}), "
                              f"not as Prometheus does (is it Prometheus?)")
    data = body.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        return _number(result, query)
    if kind == "vector" and isinstance(result, list):
        if not result:
            return None
        if len(result) > 1:
            raise PrometheusError(f"the query {query!r} gives {len(result)} series; a check needs one value "
                                  f"(aggregate them, e.g. with sum(...))")
        return _number(result[0].get("value") if isinstance(result[0], dict) else None, query)
    raise PrometheusError(f"the query {query!r} gives a {kind}; a check needs a scalar or a single-sample vector")


def _number(sample: Any, query: str) -> float | None:
    """A sample `[timestamp, "1.5"]` -> 1.5; NaN -> None."""
    try:
        value = float(sample[1])
    except (TypeError, ValueError, IndexError):
        raise PrometheusError(f"the query {query!r} gave a sample that is not a number: {sample!r}") from None
    return None if math.isnan(value) else value
