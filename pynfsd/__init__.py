"""pynfsd: a pure-Python NFSv4.0 server."""

__version__ = "0.1.0"
