"""What users read: recipe analysis, run comparison, the quickstart summary, sample sheets."""
