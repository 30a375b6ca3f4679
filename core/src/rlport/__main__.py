from rlport.cli import main

main()
