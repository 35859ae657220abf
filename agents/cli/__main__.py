from harmonycell.agents.cli.main import main

main()
