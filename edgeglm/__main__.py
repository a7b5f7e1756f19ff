from edgeglm.cli import main

main()
