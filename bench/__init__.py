"""inboxcheck benchmark: local servers, a delay proxy, raw/naive baselines and the runner (bench/run.py)."""
