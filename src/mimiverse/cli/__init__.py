"""The `mimiverse` command line: one module per command group."""
