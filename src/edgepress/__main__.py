from edgepress.cli.app import main

main()
