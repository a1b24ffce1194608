"""The commands installed with dgm-run (pyproject.toml, [project.scripts]), importable as dgm_run.commands,
with the modules they share (straightforward.py: the benchmark's reference); in a clone,
`python scripts/NAME.py` runs the same code."""
