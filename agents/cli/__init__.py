"""The command line: one module per command group, rendering, progress, the chat."""

from harmonycell.agents.cli.main import main

__all__ = ["main"]
