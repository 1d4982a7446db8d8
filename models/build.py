"""Networks from registry entries, and the reference input/output pair that proves a file loads.

``entry["architecture"]`` is ``{"builder": "module:function", "kwargs": {...}}``; the builder
returns an ``nn.Module`` whose ``state_dict`` the checkpoint holds.  Because a checkpoint file's
metadata names the builder, only builders inside trusted packages (``galmoss_auto.*``,
``torch.nn``, ``torchvision.models``) are imported: a file cannot make us call ``os.system``.

A reference is a fixed input and the network's outputs on it, computed from the weights exactly
as stored (after any float16 cast) and saved in the checkpoint.  :func:`check_reference` reruns
the network on that input, so a test can show that a shipped checkpoint loaded on the CPU
predicts what it predicted before it was saved.
"""

from __future__ import annotations

import importlib

import torch

from .checkpoint import CheckpointError

__all__ = ["TRUSTED_BUILDER_PACKAGES", "build_model", "forward_outputs", "make_reference",
           "check_reference"]

TRUSTED_BUILDER_PACKAGES = ("galmoss_auto", "torch.nn", "torchvision.models")


def _builder(entry: dict):
    spec = entry["architecture"]["builder"]
    module, _, attr = spec.partition(":")
    if not attr or not module:
        raise CheckpointError(f"{entry.get('name')}: builder {spec!r} is not 'module:function'")
    if not any(module == p or module.startswith(p + ".") for p in TRUSTED_BUILDER_PACKAGES):
        raise CheckpointError(f"{entry.get('name')}: builder module {module!r} is outside the trusted "
                              f"packages {', '.join(TRUSTED_BUILDER_PACKAGES)}; refused")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise CheckpointError(f"{entry.get('name')}: cannot import builder {spec}: {exc}") from exc
    return fn


def build_model(entry: dict, state_dict: dict | None = None, *, device="cpu") -> torch.nn.Module:
    """The network an entry describes, in eval mode, with ``state_dict`` loaded (strict)."""
    kwargs = entry["architecture"].get("kwargs") or {}
    model = _builder(entry)(**kwargs)
    if not isinstance(model, torch.nn.Module):
        raise CheckpointError(f"{entry.get('name')}: builder returned a {type(model).__name__}, not a module")
    if state_dict is not None:
        try:
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{entry.get('name')}: weights do not fit the architecture: {exc}") from exc
    return model.to(device).eval()


def _flatten(out, prefix: str, into: dict) -> None:
    if isinstance(out, torch.Tensor):
        into[prefix] = out.detach().cpu()
    elif isinstance(out, dict):
        for k, v in out.items():
            _flatten(v, f"{prefix}.{k}", into)
    elif isinstance(out, (list, tuple)):
        for i, v in enumerate(out):
            _flatten(v, f"{prefix}.{i}", into)
    # other leaves (None, strings) carry no numbers to compare


@torch.no_grad()
def forward_outputs(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """``model(x)`` in eval mode, flattened to named tensors (``output``, ``output.0.boxes`` ...)."""
    model.eval()
    out: dict[str, torch.Tensor] = {}
    _flatten(model(x), "output", out)
    return out


def make_reference(entry: dict, state_dict: dict, x: torch.Tensor, dtype=None) -> dict[str, torch.Tensor]:
    """Reference tensors for ``save_checkpoint(reference=...)``: ``input`` and the outputs of the
    network built from ``state_dict`` as it will be stored (cast to ``dtype`` and back)."""
    stored = {k: (v.detach().to(dtype) if dtype is not None and v.is_floating_point() else v.detach())
              for k, v in state_dict.items()}
    model = build_model(entry, stored).float()
    return {"input": x.detach().cpu(), **forward_outputs(model, x.detach().cpu().float())}


def check_reference(model: torch.nn.Module, reference: dict[str, torch.Tensor], *, rtol: float = 1e-4,
                    atol: float = 1e-5) -> list[str]:
    """Differences between ``model`` on the reference input and the stored outputs (empty = same)."""
    if "input" not in reference:
        return ["the checkpoint holds no reference input"]
    device = next(iter(model.parameters()), torch.empty(0)).device
    got = {k: v.cpu() for k, v in forward_outputs(model, reference["input"].to(device).float()).items()}
    want = {k: v for k, v in reference.items() if k != "input"}
    problems = []
    for k in sorted(set(got) | set(want)):
        if k not in got or k not in want:
            problems.append(f"{k}: present in {'the stored reference' if k in want else 'the new output'} only")
        elif got[k].shape != want[k].shape:
            problems.append(f"{k}: shape {tuple(got[k].shape)} != stored {tuple(want[k].shape)}")
        elif not torch.allclose(got[k].float(), want[k].float(), rtol=rtol, atol=atol):
            diff = (got[k].float() - want[k].float()).abs().max().item()
            problems.append(f"{k}: differs from the stored output by up to {diff:.3g}")
    return problems
