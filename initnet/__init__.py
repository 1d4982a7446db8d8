"""galmoss_auto.initnet: the initializer stage (sep moments, catalogs; a ResNet regressor) and its registry."""

# The top-level folder is installed as galmoss_auto.initnet; importing it under its bare name
# would make a second copy of every module (and of every registry in them).
if __name__ != "galmoss_auto.initnet":
    raise ImportError(f"import this package as galmoss_auto.initnet (pip install -e .), not as {__name__!r}")
