"""The ``tiqu`` command line: a thin dispatcher over producer, workers and trainer."""
