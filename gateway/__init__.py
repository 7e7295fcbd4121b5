"""Vamp gateway: an asyncio + uvloop HTTP/1.1 reverse proxy that splits traffic by weights and conditions."""
