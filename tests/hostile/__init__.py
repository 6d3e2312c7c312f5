"""Hostile-client tests: each attack runs against a real `pynfsd serve` process
(`tests.serverproc.ServerProcess`) and asserts the protocol error, that the server's memory
stays bounded (`ServerProcess.rss_kib`, read from /proc) and that another client is still
served afterwards (`ServerProcess.healthy`)."""
