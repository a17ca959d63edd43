"""The library's version, kept in one place for setup.py and telemetry rows."""

__version__ = "0.1.0"
