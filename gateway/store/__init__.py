"""Where gateway configuration is kept outside one process: etcd v3. `etcd` says where the store is and connects
to it; the fleet's follower and writer (gateway.store.fleet) serve and change the gateways it holds."""
