"""The ``fedft`` command line: one console script with a subcommand per job."""
