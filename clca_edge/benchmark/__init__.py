"""Benchmark sweeps: cost, latency, throughput, memory and accuracy over methods x keep rates x CLCA x backends."""
