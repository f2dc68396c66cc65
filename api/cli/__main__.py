"""`python -m api.cli ...`, as the tests and the benchmarks run the command line."""

from api.cli import main

raise SystemExit(main())
