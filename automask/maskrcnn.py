"""Mask R-CNN builders for single-band survey cutouts (torchvision's detection models).

    >>> from galmoss_auto.automask.maskrcnn import maskrcnn
    >>> net = maskrcnn("slim")            # ~1.8 M parameters, trains on 2 CPU cores
    >>> net = maskrcnn("resnet50")        # ResNet50-FPN, for a GPU

What differs from torchvision's natural-image defaults, and why:

* **Native resolution.** torchvision rescales every image to 800-1333 px; a 64-256 px cutout
  would be upsampled 4-12x (16-150x the compute) for no gain, as the PSF already sets the
  resolution.  :class:`NativeTransform` keeps each cutout at its own size (``min_size`` /
  ``max_size`` are set to the nominal cutout size for the record, the resize step is skipped), so
  one network serves 64-256 px and a batch may mix sizes (padded to a multiple of 32).
* **One channel**, already normalised (:mod:`galmoss_auto.automask.normalise`: asinh S/N), hence
  ``image_mean = 0``, ``image_std = 1``.
* **Where the centre is** (``coordinates``, px): a convolutional network is blind to position
  except through the image edges, which in a 128-256 px cutout lie beyond what it sees around
  the target; trained at 64 px, the hsc v1 network calls every galaxy of a 128-px cutout
  "other galaxy" and never "central".  With ``coordinates=S`` the transform appends two channels, (x - x_c) / S and
  (y - y_c) / S from the cutout's own centre (before any batch padding), so "central" means the
  same at every cutout size.  Off (None) by default in the builder; the training defaults and
  the shipped checkpoints (v2 and v3) use it.
* **Anchors** from 4 px (a point source in good seeing) to 80 px (a large central galaxy),
  two sizes and three aspect ratios per FPN level, on levels of stride 4, 8, 16, 32
  (``anchor_sizes``: a network trained on 128-px cutouts also sees neighbours of 100+ px, and
  takes a larger top level, :data:`ANCHOR_SIZES_128`).
* **Counts sized for cutouts**: a cutout holds a handful to a few tens of objects, so 300
  proposals (train) / 150 (test) after NMS, ``rois_per_image`` = 64 sampled RoIs per image in
  training, at most 50 detections.
* **Random initialisation, trainable GroupNorm** (no pretrained weights are reachable; batches
  are small, so BatchNorm statistics would be noisy).
* **Compact default** (``slim``): a 5-stage residual CNN (16-128 channels), a 64-channel FPN and
  lite heads (box MLP of 128, mask head of two 64-channel convs), ~1.8 M parameters.
  ``resnet18`` / ``resnet50``: torchvision ResNets with a 1-channel stem and GroupNorm under a
  128 / 256-channel FPN with torchvision's standard heads.

Classes (label -> meaning): :data:`CLASSES`.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models import resnet
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign

__all__ = ["CLASSES", "CENTRAL", "GALAXY", "STAR", "ARTEFACT", "BACKBONES", "ANCHOR_SIZES", "ANCHOR_SIZES_128",
           "NativeTransform", "centre_offsets",
           "SlimBackbone", "maskrcnn", "maskrcnn_slim", "maskrcnn_resnet18", "maskrcnn_resnet50",
           "count_parameters"]

#: Label -> class name (0 is the background, as in torchvision).
CLASSES = ("background", "central", "galaxy", "star", "artefact")
CENTRAL, GALAXY, STAR, ARTEFACT = 1, 2, 3, 4
BACKBONES = ("slim", "resnet18", "resnet50")
#: Anchor sizes (px) per FPN level (strides 4, 8, 16, 32) and aspect ratios.
ANCHOR_SIZES = ((4, 6), (9, 13), (18, 27), (40, 80))
#: Anchor sizes of the networks trained on 64-128 px crops (the top level reaches 112 px).
ANCHOR_SIZES_128 = ((4, 6), (9, 13), (18, 30), (48, 112))
ASPECT_RATIOS = (0.5, 1.0, 2.0)


def _gn(channels: int) -> nn.GroupNorm:
    # 8 channels a group (>= 1 group): stable at batch size 1, the same in training and inference
    return nn.GroupNorm(max(1, channels // 8), channels)


class NativeTransform(GeneralizedRCNNTransform):
    """torchvision's detection transform without the resize: cutouts stay at native resolution.

    Normalisation (with ``image_mean`` / ``image_std``) and padding to ``size_divisible`` are
    kept; boxes and masks come back in the input pixel grid.  ``coordinates`` (px, > 0, or None):
    append the two centre-offset channels (see the module docstring) to each image before it is
    padded into the batch."""

    def __init__(self, min_size, max_size, image_mean, image_std, coordinates: float | None = None, **kwargs):
        super().__init__(min_size, max_size, image_mean, image_std, **kwargs)
        if coordinates is not None and not coordinates > 0:
            raise ValueError(f"coordinates (the offset scale, px) must be > 0, got {coordinates}")
        self.coordinates = None if coordinates is None else float(coordinates)

    def normalize(self, image):
        image = super().normalize(image)
        if self.coordinates is None:
            return image
        return torch.cat([image, centre_offsets(image.shape[-2:], self.coordinates, image)], 0)

    def resize(self, image, target=None):
        return image, target


def centre_offsets(shape, scale: float, like: torch.Tensor | None = None) -> torch.Tensor:
    """(2, H, W): (x - x_c) / scale and (y - y_c) / scale, x_c = (W - 1) / 2, y_c = (H - 1) / 2
    (pixel centres; scale in px)."""
    h, w = int(shape[0]), int(shape[1])
    kw = {"dtype": like.dtype, "device": like.device} if like is not None else {"dtype": torch.float32}
    y = (torch.arange(h, **kw) - (h - 1) / 2.0) / scale
    x = (torch.arange(w, **kw) - (w - 1) / 2.0) / scale
    return torch.stack([x[None, :].expand(h, w), y[:, None].expand(h, w)])


class _Block(nn.Module):
    """Residual block: two 3x3 convs with GroupNorm; a strided 1x1 projection when needed."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.n1 = _gn(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.n2 = _gn(cout)
        self.proj = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _gn(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        y = torch.relu(self.n1(self.conv1(x)))
        return torch.relu(self.n2(self.conv2(y)) + self.proj(x))


class SlimBackbone(nn.Module):
    """A compact residual CNN for 1-channel cutouts: a stride-2 stem (16 ch; one input channel
    makes it cheap), then residual stages of stride 4, 8, 16, 32 px (``widths``, ``depth``
    blocks each), returned as an OrderedDict "0".."3" for the FPN."""

    def __init__(self, in_channels: int = 1, stem: int = 16, widths=(32, 64, 96, 128), depth: int = 2):
        super().__init__()
        w = tuple(int(v) for v in widths)
        if len(w) != 4:
            raise ValueError(f"widths must give 4 stage widths (strides 4-32), got {widths}")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem, 3, 2, 1, bias=False), _gn(stem),
                                  nn.ReLU(inplace=True))
        stages, cin = [], stem
        for cout in w:
            blocks = [_Block(cin, cout, 2)] + [_Block(cout, cout, 1) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.out_channels_list = list(w)

    def forward(self, x):
        x = self.stem(x)
        out = OrderedDict()
        for k, stage in enumerate(self.stages):
            x = stage(x)
            out[str(k)] = x
        return out


class _WithFPN(nn.Module):
    """Backbone body -> FPN (no extra max-pool level: a 64-px cutout's stride-64 map is 1 px)."""

    def __init__(self, body: nn.Module, in_channels_list, out_channels: int):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(list(in_channels_list), out_channels)
        self.out_channels = out_channels

    def forward(self, x):
        return self.fpn(self.body(x))


def _resnet_body(name: str, in_channels: int = 1) -> tuple[nn.Module, list[int]]:
    net = getattr(resnet, name)(weights=None, norm_layer=_gn)
    # 1-channel stem (3 with the centre-offset channels)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    body = IntermediateLayerGetter(net, {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"})
    expansion = 4 if name == "resnet50" else 1
    return body, [64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]


def maskrcnn(backbone: str = "slim", num_classes: int = len(CLASSES), size: int = 128,
             fpn_channels: int | None = None, rois_per_image: int = 64, detections_per_image: int = 50,
             score_thresh: float = 0.05, coordinates: float | None = None, anchor_sizes=None,
             **kwargs) -> MaskRCNN:
    """A Mask R-CNN for single-band cutouts (see the module docstring).

    backbone : "slim" (default, ~1.8 M parameters), "resnet18" or "resnet50".
    num_classes : including the background (default 5: :data:`CLASSES`).
    size : nominal cutout side in px (64-256), recorded as the transform's min/max size; cutouts
        of any size are processed at native resolution.
    fpn_channels : FPN width (default 64 slim, 128 resnet18, 256 resnet50).
    rois_per_image : RoIs sampled per image to train the box/mask heads (>= 8).
    detections_per_image : most detections returned per cutout (>= 1).
    score_thresh : detections below this class score are dropped (in [0, 1)).
    coordinates : scale (px, > 0) of the two centre-offset input channels, or None (none).
        64 px suits 64-256 px cutouts (the training defaults).
    anchor_sizes : four pairs of anchor sizes (px, increasing), one pair per FPN level (strides
        4, 8, 16, 32); None = :data:`ANCHOR_SIZES`.
    kwargs : passed to :class:`torchvision.models.detection.MaskRCNN` (override any default).
    """
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2 (background + 1), got {num_classes}")
    if not 16 <= int(size) <= 4096:
        raise ValueError(f"size must be in [16, 4096] px, got {size}")
    if int(rois_per_image) < 8:
        raise ValueError(f"rois_per_image must be >= 8, got {rois_per_image}")
    if int(detections_per_image) < 1:
        raise ValueError(f"detections_per_image must be >= 1, got {detections_per_image}")
    if not 0.0 <= score_thresh < 1.0:
        raise ValueError(f"score_thresh must be in [0, 1), got {score_thresh}")
    if coordinates is not None and not coordinates > 0:
        raise ValueError(f"coordinates (the offset scale, px) must be > 0, got {coordinates}")
    anchor_sizes = ANCHOR_SIZES if anchor_sizes is None else tuple(tuple(float(v) for v in level)
                                                                   for level in anchor_sizes)
    if len(anchor_sizes) != 4 or any(len(level) != 2 for level in anchor_sizes):
        raise ValueError(f"anchor_sizes must give 2 sizes for each of the 4 FPN levels, got {anchor_sizes}")
    flat = [v for level in anchor_sizes for v in level]
    if not all(v > 0 for v in flat) or any(b < a for a, b in zip(flat, flat[1:])):
        raise ValueError(f"anchor_sizes must be positive and non-decreasing (px), got {anchor_sizes}")
    in_channels = 1 if coordinates is None else 3
    lite = backbone == "slim"
    if lite:
        body = SlimBackbone(in_channels)
        channels = body.out_channels_list
        fpn_channels = int(fpn_channels or 64)
    else:
        body, channels = _resnet_body(backbone, in_channels)
        fpn_channels = int(fpn_channels or (128 if backbone == "resnet18" else 256))
    net = _WithFPN(body, channels, fpn_channels)
    anchors = AnchorGenerator(anchor_sizes, (ASPECT_RATIOS,) * len(anchor_sizes))
    levels = ["0", "1", "2", "3"]
    rep = 128 if lite else 1024
    mask_layers = (64, 64) if lite else (256, 256, 256, 256)
    options = dict(
        num_classes=int(num_classes), min_size=int(size), max_size=int(size),
        image_mean=[0.0], image_std=[1.0], rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=600, rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_train=300, rpn_post_nms_top_n_test=150,
        rpn_batch_size_per_image=128,
        box_roi_pool=MultiScaleRoIAlign(levels, output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(fpn_channels * 7 * 7, rep),
        box_batch_size_per_image=int(rois_per_image), box_detections_per_img=int(detections_per_image),
        box_score_thresh=float(score_thresh),
        mask_roi_pool=MultiScaleRoIAlign(levels, output_size=14, sampling_ratio=2),
        mask_head=MaskRCNNHeads(fpn_channels, list(mask_layers), 1, norm_layer=_gn),
    )
    # torchvision takes num_classes or the predictors, not both: give the predictors
    options["box_predictor"] = FastRCNNPredictor(rep, int(num_classes))
    options["mask_predictor"] = MaskRCNNPredictor(mask_layers[-1], mask_layers[-1], int(num_classes))
    options.update(kwargs)
    options.pop("num_classes")
    model = MaskRCNN(net, **options)
    model.transform = NativeTransform(int(size), int(size), [0.0], [1.0], coordinates=coordinates)
    return model


def maskrcnn_slim(**kwargs) -> MaskRCNN:
    """``maskrcnn("slim", ...)``: the compact default (~1.8 M parameters)."""
    return maskrcnn("slim", **kwargs)


def maskrcnn_resnet18(**kwargs) -> MaskRCNN:
    """``maskrcnn("resnet18", ...)``: ResNet18-FPN (128 channels), torchvision heads."""
    return maskrcnn("resnet18", **kwargs)


def maskrcnn_resnet50(**kwargs) -> MaskRCNN:
    """``maskrcnn("resnet50", ...)``: ResNet50-FPN (256 channels), torchvision heads; for GPUs."""
    return maskrcnn("resnet50", **kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
