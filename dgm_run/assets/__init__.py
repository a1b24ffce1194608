"""Files shipped with the package: the digit classifier of sample_quality.py."""
