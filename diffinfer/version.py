"""The version of diffinfer."""

__version__ = "0.1.0"
