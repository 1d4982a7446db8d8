"""The initializer network: a torchvision ResNet trunk on a single-band crop, plus scalars.

Builders (torchvision-detection style: small functions over composable modules):

* :func:`build_initnet` ``(arch="compact", ...)``: the model as the zoo stores it; ``arch`` is
  ``"compact"`` (default; torchvision :class:`~torchvision.models.resnet.BasicBlock` stages of
  widths 16-32-64-128, 2 blocks each, 0.72 M parameters, 1.4 MB in fp16), ``"compact-wide"``
  (the same stages 1.5x wider, 24-48-96-192: 2.2x the parameters and ~2.2x the compute),
  ``"resnet18"``, ``"resnet34"`` or ``"resnet50"`` (torchvision's own builders, random
  initialisation).
* Every trunk gets a stem for one band (``in_channels`` derived channels of one image, see
  :mod:`galmoss_auto.initnet.inputs`): a 3x3 stride-2 convolution and no max-pool, since a 64 px
  crop cannot afford the 4x reduction of ImageNet's 7x7/2 + pool stem.

Forward: ``model(x (B, C_in, S, S), scalars (B, N_SCALARS)) -> (mean (B, K), log_sigma (B, K))``
in the standardised output coordinates of :mod:`galmoss_auto.initnet.encoding`.  The scalars
(PSF size and shape, pixel scale, S/N, masked fraction) join the pooled features before the head.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models import resnet as tv

from .encoding import COORDS
from .inputs import N_CHANNELS, N_SCALARS

__all__ = ["ARCHS", "COMPACT_WIDTHS", "POOLS", "InitNet", "compact_trunk", "torchvision_trunk", "build_initnet"]

ARCHS = ("compact", "compact-wide", "resnet18", "resnet34", "resnet50")
#: Stage widths of the compact trunks (2 BasicBlocks per stage unless ``blocks`` says otherwise).
COMPACT_WIDTHS = {"compact": (16, 32, 64, 128), "compact-wide": (24, 48, 96, 192)}


def _stem(in_channels: int, width: int, stride: int = 2) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(width), nn.ReLU(inplace=True))


def compact_trunk(in_channels: int = N_CHANNELS, widths=(16, 32, 64, 128),
                  blocks=(2, 2, 2, 2), stem_stride: int = 2) -> tuple[nn.Module, int]:
    """A slim ResNet of torchvision BasicBlocks: stem (``stem_stride`` 1 or 2), then one stage
    per width (stride 1, then 2).  Returns (module mapping images to (B, widths[-1], h, w)
    feature maps, width)."""
    if len(widths) != len(blocks) or not widths:
        raise ValueError(f"widths {widths} and blocks {blocks} must be non-empty and of equal length")
    if stem_stride not in (1, 2):
        raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride}")
    layers = [_stem(in_channels, widths[0], stem_stride)]
    inplanes = widths[0]
    for i, (w, nb) in enumerate(zip(widths, blocks)):
        stride = 1 if i == 0 else 2
        down = None
        if stride != 1 or inplanes != w:
            down = nn.Sequential(tv.conv1x1(inplanes, w, stride), nn.BatchNorm2d(w))
        stage = [tv.BasicBlock(inplanes, w, stride, down)]
        stage += [tv.BasicBlock(w, w) for _ in range(nb - 1)]
        layers.append(nn.Sequential(*stage))
        inplanes = w
    return nn.Sequential(*layers), inplanes


def torchvision_trunk(arch: str, in_channels: int = N_CHANNELS) -> tuple[nn.Module, int]:
    """torchvision's resnet18/34/50 (no pretrained weights) with a one-band stem and no fc."""
    builders = {"resnet18": tv.resnet18, "resnet34": tv.resnet34, "resnet50": tv.resnet50}
    if arch not in builders:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    net = builders[arch](weights=None)
    net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=2, padding=1, bias=False)
    net.maxpool = nn.Identity()
    width = net.fc.in_features
    # the same parameter names as torchvision's model, without its pool and fc
    names = ("conv1", "bn1", "relu", "layer1", "layer2", "layer3", "layer4")
    return nn.Sequential(OrderedDict((k, getattr(net, k)) for k in names)), width


POOLS = ("avg", "avg+centre")


class InitNet(nn.Module):
    """Trunk + pooling + head: features ++ scalars -> (mean, log_sigma) of ``n_outputs``
    coordinates.

    pool : ``"avg"`` (global average of the trunk's last map) or ``"avg+centre"`` (that, plus
        the 2x2 feature vectors around the map's centre, where the crop puts the galaxy).  A
        global average is blind to where a feature lies, yet the centre offset and the light
        profile of a galaxy a few pixels across are read off the central pixels.
    """

    def __init__(self, trunk: nn.Module, width: int, n_scalars: int = N_SCALARS,
                 n_outputs: int = len(COORDS), hidden: int = 128, pool: str = "avg"):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        self.trunk = trunk
        self.pool = pool
        self.n_outputs = n_outputs
        self.n_scalars = n_scalars
        n_feat = width * (5 if pool == "avg+centre" else 1)
        self.head = nn.Sequential(nn.Linear(n_feat + n_scalars, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, 2 * n_outputs))
        # start near the standardised mean with unit uncertainty
        nn.init.zeros_(self.head[-1].bias)
        nn.init.normal_(self.head[-1].weight, std=1e-3)

    def forward(self, x: torch.Tensor, scalars: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``scalars=None``: ``x`` is the packed single-tensor form (B, C_in + 1, S, S) whose
        last channel holds the scalars in its first row (:meth:`pack`; what the zoo's
        reference check feeds a network)."""
        if scalars is None:
            x, scalars = x[:, :-1], x[:, -1, 0, :self.n_scalars]
        fmap = self.trunk(x)
        feats = fmap.mean(dim=(-2, -1))
        if self.pool == "avg+centre":
            h, w = fmap.shape[-2:]
            if h < 2 or w < 2:
                raise ValueError(f"pool 'avg+centre' needs a feature map of at least 2x2, got {h}x{w}")
            cy, cx = h // 2, w // 2
            feats = torch.cat([feats, fmap[:, :, cy - 1:cy + 1, cx - 1:cx + 1].flatten(1)], dim=1)
        out = self.head(torch.cat([feats, scalars.to(feats.dtype)], dim=1))
        mean, log_sigma = out[:, :self.n_outputs], out[:, self.n_outputs:]
        return mean, log_sigma.clamp(-7.0, 5.0)

    def pack(self, x: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        """(x, scalars) -> the packed single tensor :meth:`forward` also accepts."""
        extra = x.new_zeros(x.shape[0], 1, *x.shape[-2:])
        extra[:, 0, 0, :self.n_scalars] = scalars
        return torch.cat([x, extra], dim=1)


def build_initnet(arch: str = "compact", in_channels: int = N_CHANNELS, n_scalars: int = N_SCALARS,
                  n_outputs: int = len(COORDS), hidden: int = 128, widths=None,
                  blocks=(2, 2, 2, 2), stem_stride: int = 2, pool: str = "avg") -> InitNet:
    """The initializer network (see the module docstring).  ``widths`` (default: the arch's,
    :data:`COMPACT_WIDTHS`), ``blocks`` and ``stem_stride`` apply to the compact archs only;
    ``pool`` to every arch (see :class:`InitNet`).  The defaults are those of the first shipped
    checkpoints (which record no newer keyword); training uses
    :data:`galmoss_auto.initnet.lightning.DEFAULTS`.  Random initialisation (no pretrained
    weights exist for it)."""
    if arch in COMPACT_WIDTHS:
        widths = COMPACT_WIDTHS[arch] if widths is None else widths
        trunk, width = compact_trunk(in_channels, tuple(widths), tuple(blocks), int(stem_stride))
    elif arch in ARCHS:
        trunk, width = torchvision_trunk(arch, in_channels)
    else:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    return InitNet(trunk, width, n_scalars, n_outputs, hidden, pool)
