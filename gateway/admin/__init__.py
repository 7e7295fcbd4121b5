"""The admin API: its aiohttp application, its OpenAPI description, and its client (`vamp gateways …`)."""
