"""``python -m runtime``: the same as the ``runtime`` command."""

from runtime.cli.main import main

main()
