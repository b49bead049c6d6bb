"""The parts of `tiers.metrics`: reading a cache's stats, Prometheus, OpenTelemetry, timing."""
