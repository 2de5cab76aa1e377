"""Subcommands of the `token-compressor` command line, one module each (see cli.py)."""
