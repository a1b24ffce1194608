"""Models, one module each; every model follows the contract of models/base.py."""
