from runtime.cli.entry import main

main()
