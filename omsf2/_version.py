"""The package version, kept in one place (read by pyproject and ``omsf2 --version``)."""

__version__ = "0.1.0"
