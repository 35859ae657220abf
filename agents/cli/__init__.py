"""The command line: one module per command group, rendering, progress, the chat."""


def main() -> None:
    # imported on call: importing one piece of the CLI (render, progress) need not load every command
    from harmonycell.agents.cli.main import main as run

    run()


__all__ = ["main"]
