"""Metrics: the server's counters and their Prometheus exposition.

`stats` holds the counters the hot paths update (imported by the RPC and NFS layers, so this
package's `__init__` imports nothing); `snapshot` copies them, with what other components
count themselves, on the event loop; `collector` turns a copy into Prometheus metric families
and text; `http` is the opt-in endpoint (`pynfsd serve --metrics HOST:PORT`).
"""
