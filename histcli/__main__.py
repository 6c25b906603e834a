from histcli.cli.main import main

main()
