"""`mambaout bench`: throughput, latency and peak memory of a model, side by side with timm or other engines.

The counting, weighing and timing themselves live in `mambaout.measure`, shared with every other command."""
