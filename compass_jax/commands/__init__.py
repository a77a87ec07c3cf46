"""Subcommands of the `compass-jax` command; each module has `add_arguments` and `run`."""
