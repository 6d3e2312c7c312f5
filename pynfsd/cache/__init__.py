"""The export and credential caches, as the kernel's sunrpc caches (sans-IO foundation).

`core` the generic cache (entries, expiry, negative entries, pending upcalls, flush, size bound,
cleaning); `waiters` the bookkeeping of requests parked on a pending key; `deferral` the
asyncio skin (`await Deferral.get(key, client)`); `qword` the channel's word quoting;
`lines` the request, reply and `content` lines of `auth.unix.ip`, `nfsd.export`, `nfsd.fh`
and `auth.unix.gid`; `channel` a cache's `channel`, `flush` and `content` files without the
files.  Not yet used by the server.
"""
