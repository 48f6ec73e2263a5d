"""Dataset formats: Data-Juicer jsonl, LLaVA json, provenance, variant algebra."""
