"""Cost and speed: parameter and MAC counts, throughput, latency and peak memory, side by side with timm."""

from mambaout.bench.cost import count_macs, count_params

__all__ = ["count_macs", "count_params"]
