"""`python -m token_compressor ...` is the `token-compressor` command."""
import sys

from .cli import main

sys.exit(main())
