"""The ``strata`` command: a thin Typer layer over the same services the HTTP API uses."""
