"""galmoss_auto.initnet: initial guesses (sep moments, a user catalog, or the learned ResNet)."""

# The top-level folder is installed as galmoss_auto.initnet; importing it under its bare name
# would make a second copy of every module (and of every registry in them).
if __name__ != "galmoss_auto.initnet":
    raise ImportError(f"import this package as galmoss_auto.initnet (pip install -e .), not as {__name__!r}")

from .base import register_initializer


def _initnet_factory(**options):
    # imported on first use: the network stage pulls in torchvision and the model zoo
    from .predict import InitNetInitializer
    return InitNetInitializer(**options)


register_initializer("initnet", _initnet_factory)
