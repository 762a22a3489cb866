from edgepress.cli import main

main()
