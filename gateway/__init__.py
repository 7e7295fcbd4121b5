"""Vamp gateway: an asyncio + uvloop HTTP/1.1 reverse proxy that splits traffic by weights and conditions.

This module is the gateway's public surface: what the control plane and the load tester may use, and all
they may use besides `gateway.common` (what every part of Vamp shares). Everything else under gateway/ is
inside one of its rooms — proxy, routing, config, runtime, admin — and may change without notice;
tests/test_layout.py enforces the rule. The configuration model and its loading are imported with this
module (the command line needs them anyway); the runtime, its manager, metrics, the admin API, its client and
the gateway's commands and the fleet's store (etcd, over gRPC) only when first used, so `vamp gateways list`
does not pay for asyncio servers, aiohttp and gRPC.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gateway import compiled as compiled  # noqa: I001 - first: decides whether the compiled hot path runs
from gateway.common.errors import Conflict, Invalid, NotFound, RequestError
from gateway.config.edit import (gateway_fields, merge_patch, patch_gateway_body, patched as patched_gateway,
                                 read_gateway)
from gateway.config.load import (ConfigError, PortConflict, from_dict, gateway_from_dict, gateway_to_dict, load_file,
                                 load_text, resolve_weights, to_dict)
from gateway.config.model import FULL, Config, Gateway, GeoSettings, Route, StickyCookie, Target, Timeouts
from gateway.config.source import ConfigSource
from gateway.routing.conditions import Condition, ConditionError, canonical as canonical_condition, compile_condition
from gateway.routing.request import Lookups, RequestView

if TYPE_CHECKING:
    from gateway.admin.api import (AdminBindingError, build_app as build_admin_app, check_admin_binding,
                                   parse_admin_address)
    from gateway.admin.client import AdminClient, apply as apply_gateways_file, command as api_command, weights_summary
    from gateway.admin.gateways import GatewayApi
    from gateway.cli import register as register_commands
    from gateway.proxy.stats import BUCKETS as LATENCY_BUCKETS
    from gateway.routing.geo import TrustedProxies
    from gateway.routing.lookups import ClientLookups
    from gateway.routing.table import RouteTable
    from gateway.routing.useragent import UserAgentParser
    from gateway.runtime.manager import ConfigManager
    from gateway.runtime.metrics import BUCKET_LABELS, CLASS_LABELS, render as render_metrics
    from gateway.runtime.runtime import Runtime
    from gateway.runtime.snapshot import empty_stats, merge as merge_snapshots
    from gateway.runtime.workers import LocalWorker, ProcessWorker, Worker
    from gateway.store.etcd import STORE_ERRORS, EtcdClient, StoreAddress, StoreAddressError
    from gateway.store.etcd import describe as describe_store_error
    from gateway.store.fleet import FleetGateways
    from gateway.ui import add_routes as add_ui_routes

# name -> (module, name there): imported on first use (see __getattr__).
_LATER = {
    "AdminBindingError": ("gateway.admin.api", "AdminBindingError"),
    "build_admin_app": ("gateway.admin.api", "build_app"),
    "check_admin_binding": ("gateway.admin.api", "check_admin_binding"),
    "parse_admin_address": ("gateway.admin.api", "parse_admin_address"),
    "GatewayApi": ("gateway.admin.gateways", "GatewayApi"),
    "AdminClient": ("gateway.admin.client", "AdminClient"),
    "api_command": ("gateway.admin.client", "command"),
    "apply_gateways_file": ("gateway.admin.client", "apply"),
    "weights_summary": ("gateway.admin.client", "weights_summary"),
    "register_commands": ("gateway.cli", "register"),
    "TrustedProxies": ("gateway.routing.geo", "TrustedProxies"),
    "ClientLookups": ("gateway.routing.lookups", "ClientLookups"),
    "RouteTable": ("gateway.routing.table", "RouteTable"),
    "UserAgentParser": ("gateway.routing.useragent", "UserAgentParser"),
    "ConfigManager": ("gateway.runtime.manager", "ConfigManager"),
    "LATENCY_BUCKETS": ("gateway.proxy.stats", "BUCKETS"),
    "BUCKET_LABELS": ("gateway.runtime.metrics", "BUCKET_LABELS"),
    "CLASS_LABELS": ("gateway.runtime.metrics", "CLASS_LABELS"),
    "render_metrics": ("gateway.runtime.metrics", "render"),
    "Runtime": ("gateway.runtime.runtime", "Runtime"),
    "empty_stats": ("gateway.runtime.snapshot", "empty_stats"),
    "merge_snapshots": ("gateway.runtime.snapshot", "merge"),
    "LocalWorker": ("gateway.runtime.workers", "LocalWorker"),
    "ProcessWorker": ("gateway.runtime.workers", "ProcessWorker"),
    "Worker": ("gateway.runtime.workers", "Worker"),
    "StoreAddress": ("gateway.store.etcd", "StoreAddress"),
    "StoreAddressError": ("gateway.store.etcd", "StoreAddressError"),
    "EtcdClient": ("gateway.store.etcd", "EtcdClient"),
    "STORE_ERRORS": ("gateway.store.etcd", "STORE_ERRORS"),
    "describe_store_error": ("gateway.store.etcd", "describe"),
    "FleetGateways": ("gateway.store.fleet", "FleetGateways"),
    "add_ui_routes": ("gateway.ui", "add_routes"),
}

__all__ = [
    # the configuration: model, loading and validation, back to plain data
    "Config", "Gateway", "Route", "Target", "GeoSettings", "StickyCookie", "Timeouts", "FULL",
    "ConfigError", "load_file", "load_text", "from_dict", "to_dict", "gateway_from_dict", "gateway_to_dict",
    "resolve_weights", "PortConflict",
    # a source of configuration, and a write to one of its gateways: read, merge-patched, checked
    "ConfigSource", "gateway_fields", "read_gateway", "patched_gateway", "patch_gateway_body", "merge_patch",
    # what a request cannot do, as types (gateway.common.errors; the APIs answer 400, 404, 409)
    "RequestError", "Invalid", "NotFound", "Conflict",
    # routing: conditions, what they see of a request, the route table
    "Condition", "ConditionError", "compile_condition", "canonical_condition", "RequestView", "Lookups",
    "ClientLookups", "TrustedProxies", "UserAgentParser", "RouteTable",
    # the running gateway, its changes, its numbers
    "Runtime", "LocalWorker", "ProcessWorker", "Worker", "ConfigManager",
    # a fleet: the gateways kept in etcd (where the store is, and the ConfigSource over it)
    "StoreAddress", "StoreAddressError", "FleetGateways",
    "merge_snapshots", "empty_stats", "render_metrics", "BUCKET_LABELS", "CLASS_LABELS", "LATENCY_BUCKETS",
    # the admin API, and the gateway API's handlers over any ConfigSource
    "GatewayApi", "build_admin_app", "AdminBindingError", "check_admin_binding", "parse_admin_address",
    # the gateway's commands of `vamp`, and the client of the APIs their commands use (their shared pieces of
    # a command line: gateway.common.cli)
    "register_commands", "AdminClient", "api_command", "apply_gateways_file", "weights_summary",
    # the web UI's files and their routes, served by both APIs (docs/ui.md)
    "add_ui_routes",
    # etcd, which the platform's replicas share too: a client to it, and what its calls raise
    "EtcdClient", "STORE_ERRORS", "describe_store_error",
]


def __getattr__(name: str) -> Any:
    if name not in _LATER:
        raise AttributeError(f"module 'gateway' has no attribute {name!r}")
    module, attribute = _LATER[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value         # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LATER))
