"""Model descriptions from files: a small YAML or TOML file, or a GALFIT feedme.

YAML/TOML (chosen by suffix: ``.yaml``/``.yml`` or ``.toml``), four top-level keys, all but
``components`` optional::

    components:                        # in order; name defaults to the type (sersic, sersic2, ...)
      - {name: bulge, type: sersic}
      - {name: disk, type: expdisk, boxy: false}
      - {name: sky, type: sky}
    fixed: {bulge.n: 4.0, disk.q: null}   # null (or "init") = keep the initial value
    ties:                              # disk.x = bulge.x; disk.mag = bulge.mag + 0.5; ...
      - {target: disk.x, source: bulge.x}
      - {target: disk.mag, source: bulge.mag, offset: 0.5}
      - {target: disk.r_s, source: bulge.r_e, ratio: 2.0}
    bounds: {bulge.n: [0.5, 8]}        # catalog units, narrowing the defaults

``fixed`` may also be a list of names (all kept at their initial values).  Parameter names are
``<component>.<param>``; TOML needs them quoted (``"bulge.n" = 4.0``) or nested
(``[fixed.bulge] n = 4.0``); both are accepted.  Types are GALFIT's names (see
:data:`~galmoss_auto.fitting.profiles.BY_KIND`).

GALFIT feedme files (:func:`read_feedme`) give the model, the initial values and the run options.
Values are in GALFIT's conventions, which are the catalog's, so only the fit toggles change
meaning (0 = fixed).  The one conversion: ``ferrer`` and ``king`` give the central surface
brightness mu(0) [mag/arcsec^2] as parameter 3, turned here into the total magnitude at the
initial shape.  A constraint file (``G)``) is read as ties and bounds (:func:`read_constraints`).
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path

import torch

from .model import Model, Tie
from .profiles import BY_KIND, FlatSky, TiltedSky
from .profiles.base import boxiness_area_ratio

__all__ = ["ModelSpecError", "read_model", "model_from_dict", "read_feedme", "read_constraints",
           "load_model_file"]

#: suffixes read as YAML/TOML; anything else given to :func:`load_model_file` is a feedme
YAML_SUFFIXES = (".yaml", ".yml")
TOML_SUFFIXES = (".toml",)

_TOP_KEYS = ("components", "fixed", "ties", "bounds")
_COMPONENT_KEYS = ("name", "type", "boxy")
_TIE_KEYS = ("target", "source", "offset", "ratio")
#: spellings of "keep the initial value" in ``fixed``
_KEEP_INITIAL = (None, "init", "initial")


class ModelSpecError(ValueError):
    """A model description cannot be used; the message names the file and the key or line."""


# ---------------------------------------------------------------------------------------------
# YAML / TOML
# ---------------------------------------------------------------------------------------------
def read_model(path) -> Model:
    """A :class:`Model` from a YAML (``.yaml``/``.yml``) or TOML (``.toml``) file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise ModelSpecError(f"{path}: model file not found")
    text = path.read_text()
    try:
        if suffix in YAML_SUFFIXES:
            import yaml

            spec = yaml.safe_load(text)
        elif suffix in TOML_SUFFIXES:
            spec = tomllib.loads(text)
        else:
            raise ModelSpecError(f"{path}: unknown model-file suffix {suffix!r}; use .yaml, .yml or "
                                 ".toml (or read_feedme for a GALFIT feedme)")
    except ModelSpecError:
        raise
    except Exception as exc:  # yaml and tomllib raise their own error types
        raise ModelSpecError(f"{path}: cannot parse ({type(exc).__name__}: {exc})") from None
    return model_from_dict(spec, source=str(path))


def model_from_dict(spec, source: str = "<model description>") -> Model:
    """A :class:`Model` from a parsed description (see the module docstring)."""
    if not isinstance(spec, dict):
        raise ModelSpecError(f"{source}: expected a mapping with key 'components', got {type(spec).__name__}")
    unknown = [k for k in spec if k not in _TOP_KEYS]
    if unknown:
        raise ModelSpecError(f"{source}: unknown key(s) {unknown}; allowed: {', '.join(_TOP_KEYS)}")
    if "components" not in spec:
        raise ModelSpecError(f"{source}: missing key 'components'")
    entries = spec["components"]
    if not isinstance(entries, list) or not entries:
        raise ModelSpecError(f"{source}: 'components' must be a non-empty list")
    components, counts = [], {}
    for i, entry in enumerate(entries):
        where = f"{source}: components[{i}]"
        if not isinstance(entry, dict):
            raise ModelSpecError(f"{where}: expected a mapping with key 'type', got {entry!r}")
        bad = [k for k in entry if k not in _COMPONENT_KEYS]
        if bad:
            raise ModelSpecError(f"{where}: unknown key(s) {bad}; allowed: {', '.join(_COMPONENT_KEYS)}")
        if "type" not in entry:
            raise ModelSpecError(f"{where}: missing key 'type'")
        kind = str(entry["type"]).lower()
        name = entry.get("name") or _auto_name(kind, counts)
        boxy = entry.get("boxy", False)
        if not isinstance(boxy, bool):
            raise ModelSpecError(f"{where}: 'boxy' must be true or false, got {boxy!r}")
        components.append(_make_component(kind, str(name), boxy, where))
    fixed = _parse_fixed(spec.get("fixed"), source)
    ties = _parse_ties(spec.get("ties"), source)
    bounds = _parse_bounds(spec.get("bounds"), source)
    return _build(components, fixed, ties, bounds, source)


def _auto_name(kind: str, counts: dict) -> str:
    """GALFIT-type names with a suffix for repeats: sersic, sersic2, sersic3 ..."""
    counts[kind] = counts.get(kind, 0) + 1
    base = "sky" if kind == "tiltedsky" else kind
    return base if counts[kind] == 1 else f"{base}{counts[kind]}"


def _make_component(kind: str, name: str, boxy: bool, where: str):
    cls = BY_KIND.get(kind)
    if cls is None:
        raise ModelSpecError(f"{where}: unknown component type {kind!r}; known: {', '.join(BY_KIND)}")
    try:
        if getattr(cls, "elliptical", False):
            return cls(name, boxy=boxy)
        if boxy:
            raise ModelSpecError(f"{where}: component type {kind!r} has no boxiness; remove 'boxy'")
        return cls(name)
    except ValueError as exc:
        if isinstance(exc, ModelSpecError):
            raise
        raise ModelSpecError(f"{where}: {exc}") from None


def _flatten(mapping: dict, prefix: str = "") -> dict:
    """{"bulge": {"n": 4}} -> {"bulge.n": 4}: TOML's dotted keys arrive nested."""
    out = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _parse_fixed(value, source: str) -> dict:
    if value is None:
        return {}
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise ModelSpecError(f"{source}: 'fixed' as a list must hold parameter names, got {value!r}")
        return dict.fromkeys(value)
    if not isinstance(value, dict):
        raise ModelSpecError(f"{source}: 'fixed' must be a mapping name -> value or a list of names")
    out = {}
    for name, v in _flatten(value).items():
        if isinstance(v, str) and v.lower() in _KEEP_INITIAL[1:]:
            v = None
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ModelSpecError(f"{source}: fixed.{name} must be a number or null (keep the initial "
                                 f"value), got {v!r}")
        out[name] = None if v is None else float(v)
    return out


def _parse_ties(value, source: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ModelSpecError(f"{source}: 'ties' must be a list of mappings")
    ties = []
    for i, entry in enumerate(value):
        where = f"{source}: ties[{i}]"
        if not isinstance(entry, dict):
            raise ModelSpecError(f"{where}: expected a mapping with keys target, source, got {entry!r}")
        bad = [k for k in entry if k not in _TIE_KEYS]
        if bad:
            raise ModelSpecError(f"{where}: unknown key(s) {bad}; allowed: {', '.join(_TIE_KEYS)}")
        missing = [k for k in ("target", "source") if k not in entry]
        if missing:
            raise ModelSpecError(f"{where}: missing key(s) {missing}")
        try:
            ties.append(Tie(str(entry["target"]), str(entry["source"]),
                            offset=None if entry.get("offset") is None else float(entry["offset"]),
                            ratio=None if entry.get("ratio") is None else float(entry["ratio"])))
        except (TypeError, ValueError) as exc:
            raise ModelSpecError(f"{where}: {exc}") from None
    return ties


def _parse_bounds(value, source: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ModelSpecError(f"{source}: 'bounds' must be a mapping name -> [lower, upper]")
    out = {}
    for name, pair in _flatten(value).items():
        try:
            lo, hi = (float(v) for v in pair)
        except (TypeError, ValueError):
            raise ModelSpecError(f"{source}: bounds.{name} must be [lower, upper], got {pair!r}") from None
        if not lo < hi:
            raise ModelSpecError(f"{source}: bounds.{name}: lower {lo} must be below upper {hi}")
        out[name] = (lo, hi)
    return out


def _build(components, fixed, ties, bounds, source: str) -> Model:
    """The Model, with its own errors (unknown parameter, bad tie) re-raised naming the file."""
    try:
        return Model(components, fixed=fixed, ties=ties, bounds=bounds)
    except KeyError as exc:
        raise ModelSpecError(f"{source}: {exc.args[0]}") from None
    except ValueError as exc:
        raise ModelSpecError(f"{source}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# GALFIT feedme
# ---------------------------------------------------------------------------------------------
#: GALFIT parameter number -> catalog parameter name, per component type (1 = x, y)
_FEEDME_PARAMS = {
    "sersic": {3: "mag", 4: "r_e", 5: "n", 9: "q", 10: "pa"},
    "devauc": {3: "mag", 4: "r_e", 9: "q", 10: "pa"},
    "expdisk": {3: "mag", 4: "r_s", 9: "q", 10: "pa"},
    "gaussian": {3: "mag", 4: "fwhm", 9: "q", 10: "pa"},
    "moffat": {3: "mag", 4: "fwhm", 5: "beta", 9: "q", 10: "pa"},
    "ferrer": {3: "mag", 4: "r_out", 5: "alpha", 6: "beta", 9: "q", 10: "pa"},
    "king": {3: "mag", 4: "r_c", 5: "r_t", 6: "alpha", 9: "q", 10: "pa"},
    "psf": {3: "mag"},
    "sky": {1: "sky", 2: "dsky_dx", 3: "dsky_dy"},
}
#: types whose parameter 3 is GALFIT's central surface brightness mu(0), not a total magnitude
_MU0_TYPES = ("ferrer", "king")
#: header letters -> option names
_HEADER = {"A": "image", "B": "output", "C": "sigma", "D": "psf", "E": "psf_oversampling",
           "F": "mask", "G": "constraints", "H": "region", "I": "conv_box", "J": "zeropoint",
           "K": "plate_scale", "O": "display", "P": "mode", "S": "interactive", "W": "output_format"}
_PATH_OPTIONS = ("image", "output", "sigma", "psf", "mask", "constraints")
_LINE = re.compile(r"^\s*([A-Za-z][0-9]*|[0-9]+)\)\s*(.*)$")


def read_feedme(path):
    """Read a GALFIT feedme file.

    Returns ``(model, init, options)``:

    model : :class:`Model`; components named by type, repeats suffixed (sersic, sersic2, ...);
        parameters with fit toggle 0 are fixed (at their initial value, ``fixed[name] = None``);
        a ``sky`` with both gradients 0 and fixed becomes a flat sky, else a tilted sky; a
        ``C0)`` line makes the component boxy.  Ties and bounds come from the ``G)`` file.
    init : dict column -> float, ``<component>_<param>`` in catalog conventions.
    options : dict with ``image``, ``sigma``, ``psf``, ``mask``, ``constraints``, ``output``
        (paths relative to the feedme's folder, None for "none"/blank), ``psf_oversampling``
        (E, int >= 1), ``region`` (H: xmin, xmax, ymin, ymax, 1-based inclusive, or None),
        ``conv_box`` (I), ``zeropoint`` (J; None when absent), ``plate_scale`` (K: dx, dy arcsec/pixel),
        ``pixel_scale`` (dx when dx == dy, else None), ``display``, ``mode``.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelSpecError(f"{path}: feedme file not found")
    options: dict = {"image": None, "output": None, "sigma": None, "psf": None, "mask": None,
                     "constraints": None, "psf_oversampling": 1, "region": None, "conv_box": None,
                     "zeropoint": None, "plate_scale": None, "pixel_scale": None, "display": None,
                     "mode": 0}
    blocks: list[dict] = []
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].rstrip()
        m = _LINE.match(line)
        if not m:
            if line.strip() and not set(line.strip()) <= set("=-"):
                raise ModelSpecError(f"{path}:{lineno}: cannot parse {raw.strip()!r}")
            continue
        key, rest = m.group(1), m.group(2).split()
        where = f"{path}:{lineno}"
        if key == "0":
            if not rest:
                raise ModelSpecError(f"{where}: component type missing after '0)'")
            kind = rest[0].lower()
            if kind not in _FEEDME_PARAMS:
                raise ModelSpecError(f"{where}: unsupported GALFIT component type {kind!r}; supported: "
                                     f"{', '.join(_FEEDME_PARAMS)}")
            blocks.append({"kind": kind, "line": lineno, "params": {}, "boxy": None})
        elif key.isdigit() or key == "C0":
            if not blocks:
                raise ModelSpecError(f"{where}: parameter {key}) before any '0) <type>' line")
            blocks[-1]["params"][key] = (rest, where)
        elif key == "Z":
            continue  # GALFIT's "leave in the model image" switch: output only
        elif key in _HEADER:
            _header_option(options, _HEADER[key], rest, where)
        else:
            raise ModelSpecError(f"{where}: unknown option {key}); GALFIT's Fourier modes, bending "
                                 "and rotation (F1, B1, R0 ...) are not modelled")
    if not blocks:
        raise ModelSpecError(f"{path}: no component ('0) <type>' line) found")
    for key in _PATH_OPTIONS:
        if options[key] is not None:
            p = Path(options[key])
            options[key] = str(p if p.is_absolute() else path.parent / p)

    components, init, fixed, counts = [], {}, {}, {}
    for block in blocks:
        comp, values, frozen = _feedme_component(block, counts)
        components.append(comp)
        init.update({f"{comp.name}_{k}": v for k, v in values.items()})
        fixed.update({f"{comp.name}.{k}": None for k in frozen})
    for comp, block in zip(components, blocks):
        if block["kind"] in _MU0_TYPES and f"{comp.name}_mag" in init:
            init[f"{comp.name}_mag"] = _mu0_to_mag(comp, init, options, f"{path}:{block['line']}")
    ties, bounds = [], {}
    if options["constraints"] is not None:
        ties, bounds, freed = read_constraints(options["constraints"], components, init)
        # a tied parameter follows its source; GALFIT ignores its toggle, so must we
        for name in freed:
            fixed.pop(name, None)
    model = _build(components, fixed, ties, bounds, str(path))
    return model, init, options


def _header_option(options: dict, name: str, rest: list, where: str) -> None:
    """Store one A)..P) line, parsed."""
    try:
        if name in _PATH_OPTIONS:
            options[name] = None if not rest or rest[0].lower() == "none" else rest[0]
        elif name == "psf_oversampling":
            options[name] = int(float(rest[0])) if rest else 1
            if options[name] < 1:
                raise ValueError("must be >= 1")
        elif name == "region":
            if rest:
                region = tuple(int(float(v)) for v in rest[:4])
                if len(region) != 4 or region[0] > region[1] or region[2] > region[3] or min(region) < 1:
                    raise ValueError("needs xmin xmax ymin ymax, 1-based, min <= max")
                options[name] = region
        elif name == "conv_box":
            options[name] = tuple(int(float(v)) for v in rest[:2]) if rest else None
        elif name == "zeropoint":
            options[name] = float(rest[0])
        elif name == "plate_scale":
            dx = float(rest[0])
            dy = float(rest[1]) if len(rest) > 1 else dx
            if not (dx > 0 and dy > 0):
                raise ValueError("must be > 0")
            options[name] = (dx, dy)
            options["pixel_scale"] = dx if math.isclose(dx, dy, rel_tol=1e-6) else None
        elif name == "mode":
            options[name] = int(float(rest[0])) if rest else 0
        else:
            options[name] = " ".join(rest) or None
    except (ValueError, IndexError) as exc:
        raise ModelSpecError(f"{where}: bad value for {name}: {' '.join(rest)!r} ({exc})") from None


def _toggle(token: str, where: str) -> bool:
    """GALFIT fit toggle -> True when free."""
    if token not in ("0", "1"):
        raise ModelSpecError(f"{where}: fit toggle must be 0 (fixed) or 1 (free), got {token!r}")
    return token == "1"


def _feedme_component(block: dict, counts: dict):
    """One object block -> (component, {param: value}, [fixed param names])."""
    kind, params = block["kind"], block["params"]
    table = _FEEDME_PARAMS[kind]
    values, frozen = {}, []

    def take(number_key: str, name: str):
        rest, where = params[number_key]
        if not rest:
            raise ModelSpecError(f"{where}: parameter {number_key}) has no value")
        try:
            values[name] = float(rest[0])
        except ValueError:
            raise ModelSpecError(f"{where}: parameter {number_key}) value {rest[0]!r} is not a number") from None
        if len(rest) > 1 and not _toggle(rest[1], where):
            frozen.append(name)

    if kind != "sky" and "1" in params:
        rest, where = params["1"]
        if len(rest) < 2:
            raise ModelSpecError(f"{where}: position needs 'x y' (and optional toggles), got {rest}")
        try:
            values["x"], values["y"] = float(rest[0]), float(rest[1])
        except ValueError:
            raise ModelSpecError(f"{where}: position {rest[:2]} is not numeric") from None
        for name, token in zip(("x", "y"), rest[2:4]):
            if not _toggle(token, where):
                frozen.append(name)
    for number, name in table.items():
        if str(number) in params:
            take(str(number), name)
    boxy = "C0" in params
    if boxy:
        if kind in ("sky", "psf"):
            raise ModelSpecError(f"{params['C0'][1]}: C0) boxiness does not apply to a {kind} component")
        take("C0", "c0")
    if kind == "sky":
        # GALFIT always lists the gradients; fixed at 0 they are a flat sky
        flat = all(values.get(g, 0.0) == 0.0 and (g not in values or g in frozen)
                   for g in ("dsky_dx", "dsky_dy"))
        comp = (FlatSky if flat else TiltedSky)(_auto_name("sky", counts))
        if flat:
            values = {k: v for k, v in values.items() if k == "sky"}
            frozen = [k for k in frozen if k == "sky"]
        return comp, values, frozen
    cls = BY_KIND[kind]
    name = _auto_name(kind, counts)
    comp = cls(name, boxy=boxy) if cls.elliptical else cls(name)
    return comp, values, frozen


def _mu0_to_mag(comp, init: dict, options: dict, where: str) -> float:
    """Total magnitude of a ferrer/king component whose parameter 3 is mu(0) [mag/arcsec^2].

    Flux = I(0) · ∫ shape 2πr dr · q / R(c0), I(0) = 10^(-0.4 (mu0 - zp)) · dx·dy (counts/pixel).
    """
    names = [s.name for s in comp.shape_specs] + ["q"]
    missing = [n for n in names if f"{comp.name}_{n}" not in init]
    if missing:
        raise ModelSpecError(f"{where}: {comp.kind} needs {missing} to turn mu(0) into a total magnitude")
    p = {n: torch.tensor([[[init[f"{comp.name}_{n}"]]]], dtype=torch.float64) for n in names}
    centre = comp.log_shape(torch.zeros(1, 1, 1, dtype=torch.float64), p)
    log_integral = float((comp.log_shape_integral(p) - centre).reshape(-1)[0])
    c0 = init.get(f"{comp.name}_c0")
    area = float(boxiness_area_ratio(None if c0 is None else torch.tensor(c0, dtype=torch.float64)))
    dx, dy = options["plate_scale"] or (1.0, 1.0)
    log10_flux = (log_integral / math.log(10.0) + math.log10(p["q"].item() * dx * dy / area))
    return init[f"{comp.name}_mag"] - 2.5 * log10_flux


# ---------------------------------------------------------------------------------------------
# GALFIT constraint file
# ---------------------------------------------------------------------------------------------
#: GALFIT's parameter names in constraint files -> catalog names
_CONSTRAINT_PARAMS = {"x": "x", "y": "y", "mag": "mag", "re": "r_e", "rs": "r_s", "n": "n",
                      "q": "q", "pa": "pa", "fwhm": "fwhm", "c0": "c0", "sky": "sky",
                      "rc": "r_c", "rt": "r_t", "rout": "r_out", "alpha": "alpha", "beta": "beta",
                      "dsky/dx": "dsky_dx", "dsky/dy": "dsky_dy"}


def read_constraints(path, components, init: dict):
    """GALFIT constraint file -> (ties, bounds, tied names).

    Understood lines (component numbers 1-based, in feedme order)::

        2_3      x       offset     # x of 3 keeps its initial offset from x of 2
        1_2      re      ratio      # r_e of 2 keeps its initial ratio to r_e of 1
        1        n       0.7 to 5   # absolute range
        1        mag     -0.5 0.5   # range relative to the initial value

    Ranges on differences or ratios between components (``3-7``, ``3/5``) cannot be expressed
    by the model's box bounds and raise :class:`ModelSpecError` naming the line.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelSpecError(f"{path}: constraint file not found")
    ties, bounds, tied = [], {}, []
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        tokens = raw.split("#", 1)[0].split()
        if not tokens:
            continue
        where = f"{path}:{lineno}"
        if len(tokens) < 3:
            raise ModelSpecError(f"{where}: expected 'components parameter constraint', got {raw.strip()!r}")
        comps, param = tokens[0], tokens[1].lower()
        if param not in _CONSTRAINT_PARAMS:
            raise ModelSpecError(f"{where}: unknown parameter {tokens[1]!r}; known: {', '.join(_CONSTRAINT_PARAMS)}")
        param = _CONSTRAINT_PARAMS[param]
        if "-" in comps or "/" in comps:
            raise ModelSpecError(f"{where}: constraints on differences or ratios between components "
                                 f"({comps}) cannot be expressed as box bounds or ties")
        try:
            numbers = [int(c) for c in comps.split("_")]
        except ValueError:
            raise ModelSpecError(f"{where}: component list {comps!r} must be numbers joined by '_'") from None
        names = []
        for k in numbers:
            if not 1 <= k <= len(components):
                raise ModelSpecError(f"{where}: component {k} out of range 1..{len(components)}")
            names.append(f"{components[k - 1].name}.{param}")
        kind = tokens[2].lower()
        if kind in ("offset", "ratio"):
            if len(names) < 2:
                raise ModelSpecError(f"{where}: an {kind} constraint needs two or more components")
            src = names[0]
            v0 = init.get(src.replace(".", "_"))
            for target in names[1:]:
                vt = init.get(target.replace(".", "_"))
                if v0 is None or vt is None:
                    raise ModelSpecError(f"{where}: {kind} tie needs initial values of {src} and {target}")
                if kind == "offset":
                    ties.append(Tie(target, src, offset=vt - v0))
                else:
                    if not (v0 > 0 and vt > 0):
                        raise ModelSpecError(f"{where}: ratio tie needs positive initial values, "
                                             f"got {src}={v0}, {target}={vt}")
                    ties.append(Tie(target, src, ratio=vt / v0))
                tied.append(target)
            continue
        try:
            if len(tokens) >= 4 and tokens[3].lower() == "to":
                lo, hi = float(tokens[2]), float(tokens[4])
                relative = False
            else:
                lo, hi = float(tokens[2]), float(tokens[3])
                relative = True
        except (ValueError, IndexError):
            raise ModelSpecError(f"{where}: expected 'offset', 'ratio', 'lo to hi' or 'dlo dhi', "
                                 f"got {' '.join(tokens[2:])!r}") from None
        for name in names:
            a, b = lo, hi
            if relative:
                v = init.get(name.replace(".", "_"))
                if v is None:
                    raise ModelSpecError(f"{where}: relative range on {name} needs its initial value")
                a, b = v + lo, v + hi
            if not a < b:
                raise ModelSpecError(f"{where}: range of {name}: lower {a} must be below upper {b}")
            bounds[name] = (a, b)
    return ties, bounds, tied


def load_model_file(path):
    """Any model file -> ``(model, init, options)``: YAML/TOML give empty ``init`` and
    ``options``; every other suffix is read as a GALFIT feedme."""
    suffix = Path(path).suffix.lower()
    if suffix in YAML_SUFFIXES + TOML_SUFFIXES:
        return read_model(path), {}, {}
    return read_feedme(path)
