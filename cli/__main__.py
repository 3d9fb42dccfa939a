"""Run the ``fedft`` command line as ``python -m fedft.cli``."""

from fedft.cli.main import main

raise SystemExit(main())
