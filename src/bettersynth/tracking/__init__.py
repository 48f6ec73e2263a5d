"""MLflow: the tracking URI, experiments, one nested run per step, retried calls."""
