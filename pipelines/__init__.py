"""KFP pipelines of bettersynth; each folder holds one ``pipeline.py``."""
