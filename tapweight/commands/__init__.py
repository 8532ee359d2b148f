"""The user's entry points: the command line, the Python API, compare, predict, export, base pretraining."""
