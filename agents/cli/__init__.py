"""The command line: one module per command group, rendering, progress, the chat."""


def main() -> None:
    # imported on call, so that importing an agent module (which may use cli.progress) does not
    # import the whole command line, and with it the team, half-way through its own import
    from harmonycell.agents.cli.main import main as run

    run()


__all__ = ["main"]
