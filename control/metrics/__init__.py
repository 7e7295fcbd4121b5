"""The platform's measurements of its gateways: what each gateway, route, cluster port, service and instance
received, second by second over a window (`model` is the surface the rest of the control plane reads), and
their Prometheus exposition (`exposition`)."""
