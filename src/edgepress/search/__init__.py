"""Search over recipes (``edgepress search``): the space, the Optuna study, trial latency, the command."""
