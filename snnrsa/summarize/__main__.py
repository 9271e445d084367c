from snnrsa.summarize.cli import main

main()
