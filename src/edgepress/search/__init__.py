"""Search over recipes (issue 16, in progress): the space; the Optuna study and the command come next."""
