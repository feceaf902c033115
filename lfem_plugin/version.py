"""The package version (one place: setup.py reads it, the CLI and result files print it)."""
__version__ = "0.2.0"
