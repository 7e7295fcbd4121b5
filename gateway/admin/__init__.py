"""The admin API: its aiohttp application and its OpenAPI description."""
