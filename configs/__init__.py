"""configs/ is installed as the package dgm_run.configs, where Hydra finds it (pkg://dgm_run.configs)."""
