"""The platform on etcd (`vamp run --store etcd://…/PREFIX`): the control plane's store in etcd, shared by several
`vamp run` replicas, one of them the elected leader (docs/replicas.md)."""
