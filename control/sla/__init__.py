"""SLAs and escalations: the monitor that measures each deployment cluster with an SLA and acts on it
(`monitor`), and the escalations it applies (`escalations`). `standins` holds stand-ins for the metrics
aggregator and the event log while those are not yet part of the platform."""
