"""What the service says about itself, used from every layer (no Flask here): Prometheus metrics
(metrics.py) and log records that name their request, the JSON access log (logs.py)."""
