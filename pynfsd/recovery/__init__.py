"""Client records and grace shared by the nodes of a cluster (`--recovery etcd://...`).

`cluster`: the grace rules and the records' layout (sans-IO); `etcdkv`: the bounded etcd
connection; `etcd`: the node's store and grace driver over it; `serve`: the CLI options.
"""
