"""The version of wideNN (one source: setup.cfg reads it, ``wideNN --version`` prints it)."""
__version__ = "0.1.0"
