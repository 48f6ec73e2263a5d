"""bettersynth: data-centric training of small vision-language models on Kubeflow, DVC and MLflow."""

__version__ = "0.1.0"
