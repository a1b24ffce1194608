"""The commands installed with dgm-run (pyproject.toml, [project.scripts]), importable as dgm_run.commands;
in a clone, `python scripts/NAME.py` runs the same code."""
