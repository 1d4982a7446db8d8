"""galmoss_auto.pipelines: `galmoss-auto run` (streaming, shards, resume) and the command line."""

# The top-level folder is installed as galmoss_auto.pipelines; importing it under its bare name
# would make a second copy of every module (and of every registry in them).
if __name__ != "galmoss_auto.pipelines":
    raise ImportError(f"import this package as galmoss_auto.pipelines (pip install -e .), not as {__name__!r}")
