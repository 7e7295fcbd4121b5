"""Where gateway configuration is kept outside one process: etcd v3 (docs/fleet.md). `etcd` says where the store
is and connects to it; `keys` lays the gateways out under a prefix; `follower` keeps a ConfigManager serving
what the store holds; `fleet` (`FleetGateways`) is the gateway API's source over it, whose writes go to the
store. Nothing here is imported by a standalone gateway."""
