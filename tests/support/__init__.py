"""The integration-test harness: real gateway and backend processes on loopback, and an h11 client."""
from .config import config, gateway, route, shop_config
from .http import BrokenResponse, HttpClient, Response, first_response_from, get, raw_exchange, sticky_cookie
from .processes import (LOOPBACK, BackendProcess, FleetGatewayProcess, GatewayProcess, Metrics, PeakRss,
                        ProcessError, free_port, port_accepts, run_cli)
from .pool import Processes

__all__ = [
    "LOOPBACK", "BackendProcess", "BrokenResponse", "FleetGatewayProcess", "GatewayProcess", "HttpClient",
    "Metrics", "PeakRss", "ProcessError", "Processes", "Response", "config", "first_response_from", "free_port",
    "gateway", "get", "port_accepts", "raw_exchange", "route", "run_cli", "shop_config", "sticky_cookie",
]
