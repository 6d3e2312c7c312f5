"""Benchmarks of pynfsd against real clients (see ``bench.kernel_bench``)."""
