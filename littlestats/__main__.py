from littlestats.cli import main

main()
