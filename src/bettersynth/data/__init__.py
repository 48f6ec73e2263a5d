"""Dataset formats (Data-Juicer jsonl, LLaVA json) and safe image access."""
