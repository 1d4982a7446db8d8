"""galmoss_auto.data_scripts: survey simulations with exact truth, and training data sets."""

# The top-level folder is installed as galmoss_auto.data_scripts; importing it under its bare name
# would make a second copy of every module (and of every registry in them).
if __name__ != "galmoss_auto.data_scripts":
    raise ImportError(f"import this package as galmoss_auto.data_scripts (pip install -e .), not as {__name__!r}")
