"""Multi-client simulation on one machine: engines, partitioners and reports."""
