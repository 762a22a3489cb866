"""The command line: a thin typer command per module; each builds a config and calls the library, importing torch only inside the command."""
