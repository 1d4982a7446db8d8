"""galmoss_auto.automask: the masker stage (sep segmentation; a Mask R-CNN masker) and its registry."""

# The top-level folder is installed as galmoss_auto.automask; importing it under its bare name
# would make a second copy of every module (and of every registry in them).
if __name__ != "galmoss_auto.automask":
    raise ImportError(f"import this package as galmoss_auto.automask (pip install -e .), not as {__name__!r}")
