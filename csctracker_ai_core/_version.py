"""The library's version, kept in one place for pyproject.toml and telemetry rows."""

__version__ = "0.1.0"
