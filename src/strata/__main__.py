from strata.cli.main import main

main()
