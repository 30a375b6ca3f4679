"""Where a run's metrics go: loggers, the per-step summary and throughput figures."""
