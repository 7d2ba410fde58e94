from sleutelbos.cli import main

main()
