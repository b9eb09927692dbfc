from runtime._entry import main

main()
