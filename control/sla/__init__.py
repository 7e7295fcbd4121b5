"""SLAs and escalations: the monitor that measures each deployment cluster with an SLA and acts on it
(`monitor`), and the escalations it applies (`escalations`)."""
