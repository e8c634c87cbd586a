"""Traffic generator, audit and benchmarks."""
