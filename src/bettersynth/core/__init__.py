"""What every layer stands on: samples, safe image access, YAML with line numbers, retries, registries, device choice."""
