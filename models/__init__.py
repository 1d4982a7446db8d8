"""galmoss_auto.models: the model zoo (registry, shipped safetensors checkpoints, downloads)."""

# The top-level folder is installed as galmoss_auto.models; importing it under its bare name
# would make a second copy of every module (and of every registry in them).
if __name__ != "galmoss_auto.models":
    raise ImportError(f"import this package as galmoss_auto.models (pip install -e .), not as {__name__!r}")
