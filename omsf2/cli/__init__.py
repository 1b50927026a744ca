"""The ``omsf2`` command line (Typer). Nothing imports this package."""
