from cowest.cli.main import main

main()
