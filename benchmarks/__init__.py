"""Performance benchmarks (``make bench``): each case runs in its own process (``benchmarks.harness``)."""
