"""dgm-run: a Hydra-configured runner for deep generative models."""

__version__ = "0.1.0"
