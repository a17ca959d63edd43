"""The library's version, kept in one place for pyproject.toml and telemetry rows."""

__version__ = "0.2.0"
