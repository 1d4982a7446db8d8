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
Both generations are read (GALFIT 3: 9) b/a, 10) PA, C0) boxiness; GALFIT 2.x: 8) b/a, 9) PA,
10) boxiness), the generation told from the file or given as ``feedme_version``; GALFIT's own
output files (``galfit.NN``, ``*.out``) are read the same way.
Values are in GALFIT's conventions, which are the catalog's, so only the fit toggles change
meaning (0 = fixed).  The one conversion: ``ferrer`` and ``king`` give the central surface
brightness mu(0) [mag/arcsec^2] as parameter 3, turned here into the total magnitude at the
initial shape.  A constraint file (``G)``) is read as ties and bounds (:func:`read_constraints`).
"""

from __future__ import annotations

import logging
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

log = logging.getLogger(__name__)

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
# GALFIT feedme (and GALFIT's own output files, which have the same format)
# ---------------------------------------------------------------------------------------------
#: GALFIT 3 parameter number -> catalog parameter name, per component type (1 = x, y; C0 = c0)
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
#: types with an ellipse (b/a, PA, boxiness), whose numbering differs between the generations
_ELLIPTICAL_TYPES = tuple(k for k, t in _FEEDME_PARAMS.items() if "q" in t.values())


def _param_table(kind: str, version: int) -> dict:
    """GALFIT parameter key ("3", "C0", ...) -> catalog name for one component type.

    GALFIT 3: 9) b/a, 10) PA, C0) boxiness.  GALFIT 2.x: 8) b/a, 9) PA, 10) boxiness
    (diskiness < 0, boxiness > 0: the same generalised ellipse as GALFIT 3's C0).
    """
    table = {str(k): v for k, v in _FEEDME_PARAMS[kind].items()}
    if kind in _ELLIPTICAL_TYPES:
        if version == 2:
            del table["10"]
            table.update({"8": "q", "9": "pa", "10": "c0"})
        else:
            table["C0"] = "c0"
    return table


#: types whose parameter 3 is GALFIT's central surface brightness mu(0), not a total magnitude
_MU0_TYPES = ("ferrer", "king")
#: types GALFIT 2 does not have
_GALFIT3_ONLY_TYPES = ("ferrer",)
#: header letters -> option names
_HEADER = {"A": "image", "B": "output", "C": "sigma", "D": "psf", "E": "psf_oversampling",
           "F": "mask", "G": "constraints", "H": "region", "I": "conv_box", "J": "zeropoint",
           "K": "plate_scale", "O": "display", "P": "mode", "S": "interactive", "W": "output_format"}
_PATH_OPTIONS = ("image", "output", "sigma", "psf", "mask", "constraints")
_LINE = re.compile(r"^\s*([A-Za-z][0-9]*|[0-9]+)\)\s*(.*)$")
#: a number as GALFIT writes it in output files: "*1.23*" (a problem with the fit), "[1.23]"
#: (held fixed), or plain
_MARKED = re.compile(r"^([\[*]*)([^\[\]*]+?)([\]*]*)$")

#: valid range of each parameter's value in a feedme: (test, description of the bound)
_POSITIVE = (lambda v: v > 0, "> 0")
_VALID = {"q": (lambda v: 0 < v <= 1, "in (0, 1] (b/a)"),
          "r_e": _POSITIVE, "r_s": _POSITIVE, "fwhm": _POSITIVE, "r_out": _POSITIVE, "r_c": _POSITIVE,
          "r_t": _POSITIVE, "n": _POSITIVE, "alpha": _POSITIVE,
          "c0": (lambda v: v > -2, "> -2 (the ellipse exponent c0 + 2 must be positive)")}
_VALID_BY_KIND = {("moffat", "beta"): (lambda v: v > 1, "> 1 (a Moffat profile with beta <= 1 has "
                                                        "infinite flux)"),
                  ("ferrer", "beta"): (lambda v: 0 <= v < 2, "in [0, 2)")}


def read_feedme(path, feedme_version: int | None = None):
    """Read a GALFIT feedme file, or one of GALFIT's own output files (``galfit.NN``, ``*.out``).

    Both generations are read: GALFIT 3 (``9)`` b/a, ``10)`` PA, ``C0)`` boxiness) and GALFIT 2.x
    (``8)`` b/a, ``9)`` PA, ``10)`` diskiness/boxiness).  The generation is told from the file:
    GALFIT-3-only lines and types (``C0)``, ``P) 2|3``, ``W)``, ``ferrer``; an ellipse given by
    ``9)``/``10)`` without ``8)``, or by ``8)`` alone), then which numbering gives valid values
    (b/a in (0, 1]: GALFIT 3's unused ``8) 0`` is no b/a, GALFIT 2's PA on ``9)`` is none
    either), then GALFIT's own comments (``# axis ratio (b/a)`` on line 8 or 9).  A file that
    stays ambiguous raises :class:`ModelSpecError` asking for ``feedme_version`` (2 or 3;
    ``--feedme-version`` on the command line), which is then used; a version that contradicts
    the file is an error.

    Numbers may carry GALFIT's output marks (``*1.23*``: GALFIT saw a problem with that
    parameter; ``[1.23]``: held fixed); the marks are removed, ``*`` marks are logged and listed
    in ``options["galfit_marked"]``.

    Returns ``(model, init, options)``:

    model : :class:`Model`; components named by type, repeats suffixed (sersic, sersic2, ...);
        parameters with fit toggle 0 are fixed (at their initial value, ``fixed[name] = None``);
        a ``sky`` with both gradients 0 and fixed becomes a flat sky, else a tilted sky; a
        boxiness (``C0)``, or GALFIT 2's ``10)``) that is free or non-zero makes the component
        boxy (fixed at 0 it is the plain ellipse).  Ties and bounds come from the ``G)`` file.
    init : dict column -> float, ``<component>_<param>`` in catalog conventions.
    options : dict with ``image``, ``sigma``, ``psf``, ``mask``, ``constraints``, ``output``
        (paths relative to the feedme's folder, None for "none"/blank), ``psf_oversampling``
        (E, int >= 1), ``region`` (H: xmin, xmax, ymin, ymax, 1-based inclusive, or None),
        ``conv_box`` (I), ``zeropoint`` (J; None when absent), ``plate_scale`` (K: dx, dy arcsec/pixel),
        ``pixel_scale`` (dx when dx == dy, else None), ``display``, ``mode``, ``feedme_version``
        (2 or 3, the numbering used), ``feedme_version_reason`` (why) and ``galfit_marked``.

    Values outside their valid range (b/a not in (0, 1], sizes or n <= 0, non-finite numbers)
    raise :class:`ModelSpecError` naming the file, the line and the bound; so does a *fixed*
    value outside the range the model supports (it could not be held where the file says).
    """
    path = Path(path)
    version = _check_version(feedme_version, path)
    if not path.is_file():
        raise ModelSpecError(f"{path}: feedme file not found")
    options: dict = {"image": None, "output": None, "sigma": None, "psf": None, "mask": None,
                     "constraints": None, "psf_oversampling": 1, "region": None, "conv_box": None,
                     "zeropoint": None, "plate_scale": None, "pixel_scale": None, "display": None,
                     "mode": 0, "feedme_version": None, "feedme_version_reason": "", "galfit_marked": []}
    header_lines: dict = {}
    blocks: list[dict] = []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelSpecError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    for lineno, raw in enumerate(text.splitlines(), 1):
        code, _, comment = raw.partition("#")
        line = code.rstrip()
        m = _LINE.match(line)
        if not m:
            if line.strip() and not set(line.strip()) <= set("=-"):
                raise ModelSpecError(f"{path}:{lineno}: cannot parse {raw.strip()!r}")
            continue
        key, rest = m.group(1).upper(), m.group(2).split()
        where = f"{path}:{lineno}"
        if key == "0":
            if not rest:
                raise ModelSpecError(f"{where}: component type missing after '0)'")
            kind = rest[0].lower()
            if kind not in _FEEDME_PARAMS:
                raise ModelSpecError(f"{where}: unsupported GALFIT component type {kind!r}; supported: "
                                     f"{', '.join(_FEEDME_PARAMS)}")
            blocks.append({"kind": kind, "line": lineno, "where": where, "params": {}})
        elif key.isdigit() or key == "C0":
            if not blocks:
                raise ModelSpecError(f"{where}: parameter {key}) before any '0) <type>' line")
            if key in blocks[-1]["params"]:
                raise ModelSpecError(f"{where}: parameter {key}) given twice in the component of line "
                                     f"{blocks[-1]['line']}")
            blocks[-1]["params"][key] = (rest, where, comment.strip().lower())
        elif key == "Z":
            continue  # GALFIT's "leave in the model image" switch: output only
        elif key in _HEADER:
            _header_option(options, _HEADER[key], rest, where)
            header_lines[key] = (rest, where)
        else:
            raise ModelSpecError(f"{where}: unknown option {key}); GALFIT's Fourier modes, bending "
                                 "and rotation (F1, B1, R0 ...) are not modelled")
    if not blocks:
        raise ModelSpecError(f"{path}: no component ('0) <type>' line) found")
    for key in _PATH_OPTIONS:
        if options[key] is not None:
            p = Path(options[key]).expanduser()
            options[key] = str(p if p.is_absolute() else path.parent / p)

    for block in blocks:                      # numbers first: a bad number is an error either way
        block["numbers"] = {key: _numbers(block["kind"], key, rest, where, options["galfit_marked"])
                            for key, (rest, where, _) in block["params"].items()}
    version, reason = _galfit_generation(path, blocks, header_lines, version)
    options["feedme_version"], options["feedme_version_reason"] = version, reason
    for message in options["galfit_marked"]:
        log.warning("%s", message)

    components, init, fixed, counts, tables = [], {}, {}, {}, []
    for block in blocks:
        comp, values, frozen = _feedme_component(block, counts, version, reason)
        components.append(comp)
        tables.append(_param_table(block["kind"], version))
        init.update({f"{comp.name}_{k}": v for k, v in values.items()})
        fixed.update({f"{comp.name}.{k}": None for k in frozen})
    for comp, block in zip(components, blocks):
        if block["kind"] in _MU0_TYPES and f"{comp.name}_mag" in init:
            init[f"{comp.name}_mag"] = _mu0_to_mag(comp, init, options, block["where"])
    ties, bounds = [], {}
    if options["constraints"] is not None:
        ties, bounds, freed = read_constraints(options["constraints"], components, init, tables=tables)
        # a tied parameter follows its source; GALFIT ignores its toggle, so must we
        for name in freed:
            fixed.pop(name, None)
    model = _build(components, fixed, ties, bounds, str(path))
    return model, init, options


def _check_version(feedme_version, path) -> int | None:
    if feedme_version is None:
        return None
    try:
        v = int(feedme_version)
    except (TypeError, ValueError):
        v = None
    if v not in (2, 3) or (isinstance(feedme_version, float) and feedme_version != v):
        raise ModelSpecError(f"{path}: feedme_version must be 2 (GALFIT 2.x) or 3 (GALFIT 3), "
                             f"got {feedme_version!r}")
    return v


def _numbers(kind: str, key: str, rest: list, where: str, marked: list) -> list:
    """A parameter line's tokens -> [(value, toggle token or None), ...] per value.

    Position lines ``1) x y tx ty`` give two values; every other line one value and an optional
    toggle.  GALFIT's output marks around numbers are removed (``*`` ones recorded in ``marked``).
    """
    n_values = 2 if key == "1" and kind != "sky" else 1
    if not rest:
        raise ModelSpecError(f"{where}: parameter {key}) has no value")
    if len(rest) < n_values:
        raise ModelSpecError(f"{where}: position needs 'x y' (and optional toggles), got {rest}")
    values = []
    for k in range(n_values):
        token = rest[k]
        m = _MARKED.match(token)
        body = m.group(2) if m else token
        try:
            v = float(body)
        except ValueError:
            raise ModelSpecError(f"{where}: parameter {key}) value {token!r} is not a number") from None
        if not math.isfinite(v):
            raise ModelSpecError(f"{where}: parameter {key}) value {token!r} is not finite")
        if m and "*" in m.group(1) + m.group(3):
            marked.append(f"{where}: parameter {key}) value {token} is marked '*' by GALFIT "
                          "(a problem with that parameter in the fit that wrote this file)")
        toggle = rest[n_values + k] if len(rest) > n_values + k else None
        if toggle is None and m and "[" in m.group(1):
            toggle = "0"               # "[1.23]": GALFIT held it fixed
        values.append((v, toggle))
    return values


def _header_option(options: dict, name: str, rest: list, where: str) -> None:
    """Store one A)..W) line, parsed."""
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
            if not math.isfinite(options[name]):
                raise ValueError("must be finite")
        elif name == "plate_scale":
            dx = float(rest[0])
            dy = float(rest[1]) if len(rest) > 1 else dx
            if not (0 < dx < math.inf and 0 < dy < math.inf):
                raise ValueError("must be finite and > 0")
            options[name] = (dx, dy)
            options["pixel_scale"] = dx if math.isclose(dx, dy, rel_tol=1e-6) else None
        elif name == "mode":
            options[name] = int(float(rest[0])) if rest else 0
        else:
            options[name] = " ".join(rest) or None
    except (ValueError, IndexError) as exc:
        raise ModelSpecError(f"{where}: bad value for {name}: {' '.join(rest)!r} ({exc})") from None


# -- which GALFIT generation wrote the file ---------------------------------------------------
_COMMENT_AXIS_RATIO = re.compile(r"axis ratio|b/a")
_COMMENT_PA = re.compile(r"position angle|\bpa\b")
_COMMENT_BOXY = re.compile(r"disk[iy]ness|box[iy]ness|boxy|disky")
_COMMENT_UNUSED = re.compile(r"^-+$")


def _galfit_generation(path, blocks, header_lines, requested):
    """(2 or 3, reason): the numbering of the file's ellipse parameters (see read_feedme)."""
    structural = {2: [], 3: []}
    if "W" in header_lines:
        structural[3].append(f"{header_lines['W'][1]}: W) exists only in GALFIT 3")
    if "P" in header_lines and header_lines["P"][0][:1] in (["2"], ["3"]):
        structural[3].append(f"{header_lines['P'][1]}: P) {header_lines['P'][0][0]} exists only in GALFIT 3")
    hints = {2: [], 3: []}
    # only components that give any of 8), 9), 10), C0) read differently in the two generations
    elliptical = [b for b in blocks if b["kind"] in _ELLIPTICAL_TYPES
                  and any(k in b["params"] for k in ("8", "9", "10", "C0"))]
    for b in elliptical:
        p = b["params"]
        if "C0" in p:
            structural[3].append(f"{p['C0'][1]}: C0) exists only in GALFIT 3")
        if b["kind"] in _GALFIT3_ONLY_TYPES:
            structural[3].append(f"{b['where']}: type {b['kind']} exists only in GALFIT 3")
        if ("9" in p or "10" in p) and "8" not in p:
            structural[3].append(f"{b['where']}: ellipse on 9)/10) without 8)")
        if "8" in p and "9" not in p and "10" not in p:
            structural[2].append(f"{b['where']}: ellipse on 8) without 9)/10)")
        for key, gen_if in (("8", {"ratio": 2, "unused": 3}), ("9", {"ratio": 3, "pa": 2}),
                            ("10", {"pa": 3, "boxy": 2})):
            if key not in p:
                continue
            comment, where = p[key][2], p[key][1]
            for what, pattern in (("ratio", _COMMENT_AXIS_RATIO), ("pa", _COMMENT_PA),
                                  ("boxy", _COMMENT_BOXY), ("unused", _COMMENT_UNUSED)):
                if what in gen_if and pattern.search(comment):
                    hints[gen_if[what]].append(f"{where}: comment '{comment}'")
    if not elliptical and not structural[2] and not structural[3]:
        return requested or 3, "no 8)-10) ellipse lines: both generations read the file alike"
    if structural[2] and structural[3]:
        raise ModelSpecError(f"{path}: mixes GALFIT 2 and GALFIT 3 numbering: {structural[2][0]}; "
                             f"{structural[3][0]}")
    fixed_by_file = 2 if structural[2] else 3 if structural[3] else None
    if requested is not None:
        if fixed_by_file is not None and fixed_by_file != requested:
            raise ModelSpecError(f"{path}: feedme_version={requested} contradicts the file, which is "
                                 f"GALFIT {fixed_by_file} ({structural[fixed_by_file][0]})")
        return requested, f"feedme_version={requested} given"
    if fixed_by_file is not None:
        return fixed_by_file, structural[fixed_by_file][0]
    valid = {g: _first_invalid(elliptical, g) for g in (2, 3)}
    plausible = [g for g in (2, 3) if valid[g] is None]
    hinted = [g for g in (2, 3) if hints[g] and not hints[5 - g]]
    if len(plausible) == 1 and (not hinted or hinted == plausible):
        g = plausible[0]
        return g, f"only GALFIT {g} numbering gives valid values (GALFIT {5 - g}: {valid[5 - g]})"
    if len(plausible) != 1 and len(hinted) == 1:
        return hinted[0], f"GALFIT {hinted[0]}'s comments ({hints[hinted[0]][0]})"
    detail = "; ".join(f"read as GALFIT {g}: {valid[g] or 'valid'}" for g in (2, 3))
    if hinted:
        detail += f"; but the comments say GALFIT {hinted[0]} ({hints[hinted[0]][0]})"
    raise ModelSpecError(f"{path}: cannot tell whether this is a GALFIT 2.x feedme (8) b/a, 9) PA, "
                         f"10) boxiness) or a GALFIT 3 one (9) b/a, 10) PA, C0) boxiness) ({detail}); "
                         "pass --feedme-version 2 or 3 (feedme_version= in Python)")


def _first_invalid(blocks, version) -> str | None:
    """The first ellipse value that is invalid under ``version``'s numbering, or None."""
    for b in blocks:
        table = _param_table(b["kind"], version)
        for key in ("8", "9", "10"):
            name = table.get(key)
            if name in ("q", "c0") and key in b["numbers"]:
                v = b["numbers"][key][0][0]
                test, bound = _VALID[name]
                if not test(v):
                    return f"{b['params'][key][1]}: {name} = {v} is not {bound}"
    return None


def _toggle(token: str, where: str) -> bool:
    """GALFIT fit toggle -> True when free."""
    if token not in ("0", "1"):
        raise ModelSpecError(f"{where}: fit toggle must be 0 (fixed) or 1 (free), got {token!r}")
    return token == "1"


def _feedme_component(block: dict, counts: dict, version: int, reason: str):
    """One object block -> (component, {param: value}, [fixed param names])."""
    kind, params, numbers = block["kind"], block["params"], block["numbers"]
    table = _param_table(kind, version)
    values, frozen, lines = {}, [], {}

    def take(key: str, name: str, value, toggle):
        where = params[key][1]
        if toggle is not None and not _toggle(toggle, where):
            frozen.append(name)
        values[name], lines[name] = value, (key, where)

    if kind != "sky" and "1" in numbers:
        for name, (value, toggle) in zip(("x", "y"), numbers["1"]):
            take("1", name, value, toggle)
    for key, name in table.items():
        if key in numbers and not (kind != "sky" and key == "1"):
            take(key, name, *numbers[key][0])
    if kind in ("sky", "psf") and "C0" in params:
        raise ModelSpecError(f"{params['C0'][1]}: C0) boxiness does not apply to a {kind} component")
    generation = f"GALFIT {version} numbering: {reason}"
    for name, value in values.items():
        test, bound = _VALID_BY_KIND.get((kind, name)) or _VALID.get(name, (None, None))
        if test is not None and not test(value):
            key, where = lines[name]
            raise ModelSpecError(f"{where}: {kind} {name} = {value} (parameter {key})) is outside its valid "
                                 f"range: must be {bound} [{generation}]")
    # a boxiness held at 0 is the plain ellipse: no c0 parameter (keeps the analytic Jacobian)
    boxy = "c0" in values and not (values["c0"] == 0.0 and "c0" in frozen)
    if "c0" in values and not boxy:
        del values["c0"]
        frozen.remove("c0")
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
    # a fixed value must be one the model can hold: initial values outside the supported range
    # are moved inside it, which for a fixed parameter would silently change the model
    for pname in frozen:
        spec = comp.spec(pname)
        value = values[pname]
        if not spec.lower <= value <= spec.upper:
            key, where = lines[pname]
            raise ModelSpecError(f"{where}: fixed {kind} {pname} = {value} (parameter {key})) is outside the "
                                 f"range the model supports [{spec.lower}, {spec.upper}] [{generation}]")
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


def read_constraints(path, components, init: dict, tables=None):
    """GALFIT constraint file -> (ties, bounds, tied names).

    Understood lines (component numbers 1-based, in feedme order)::

        2_3      x       offset     # x of 3 keeps its initial offset from x of 2
        1_2      re      ratio      # r_e of 2 keeps its initial ratio to r_e of 1
        1        n       0.7 to 5   # absolute range
        1        mag     -0.5 0.5   # range relative to the initial value
        1        4       1 to 20    # a parameter by its feedme number (needs ``tables``)

    ``tables`` (one per component: feedme key -> catalog name, from the feedme's generation)
    lets parameters be given by number, as GALFIT allows.  An absolute range wider than the
    range the model supports is narrowed to it (the model's own limits hold in any case, as in
    GALFIT); a range outside it, or inverted, raises.  Ranges on differences or ratios between
    components (``3-7``, ``3/5``) cannot be expressed by the model's box bounds and raise
    :class:`ModelSpecError` naming the line.
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
        comps, param_token = tokens[0], tokens[1].lower()
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
            names.append(f"{components[k - 1].name}.{_constraint_param(param_token, k, tables, where)}")
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
            comp_name, pname = name.split(".")
            spec = next(c for c in components if c.name == comp_name).spec(pname)
            a2, b2 = max(a, spec.lower), min(b, spec.upper)
            if not a2 < b2:
                raise ModelSpecError(f"{where}: range of {name} [{a}, {b}] lies outside the range the "
                                     f"model supports [{spec.lower}, {spec.upper}]")
            bounds[name] = (a2, b2)
    return ties, bounds, tied


def _constraint_param(token: str, component: int, tables, where: str) -> str:
    """A constraint file's parameter (name or feedme number) -> catalog name."""
    if token.isdigit():
        if tables is None:
            raise ModelSpecError(f"{where}: parameter given by number ({token}); use its name "
                                 f"({', '.join(_CONSTRAINT_PARAMS)})")
        table = tables[component - 1]
        if token == "1" and table.get("1") != "sky":
            raise ModelSpecError(f"{where}: parameter 1 of component {component} is the position "
                                 "(x and y); constrain 'x' or 'y' by name")
        name = table.get(token)
        if name is None:
            raise ModelSpecError(f"{where}: component {component} has no parameter {token}) "
                                 f"(it has {', '.join(sorted(table, key=lambda k: (len(k), k)))})")
        return name
    if token not in _CONSTRAINT_PARAMS:
        raise ModelSpecError(f"{where}: unknown parameter {token!r}; known: {', '.join(_CONSTRAINT_PARAMS)}")
    return _CONSTRAINT_PARAMS[token]


def load_model_file(path, feedme_version: int | None = None):
    """Any model file -> ``(model, init, options)``: YAML/TOML give empty ``init`` and
    ``options``; every other suffix is read as a GALFIT feedme (``feedme_version`` 2 or 3 where
    the file does not tell; see :func:`read_feedme`)."""
    suffix = Path(path).suffix.lower()
    if suffix in YAML_SUFFIXES + TOML_SUFFIXES:
        if feedme_version is not None:
            raise ModelSpecError(f"{path}: feedme_version applies to GALFIT feedme files, not to a "
                                 f"{suffix} model description")
        return read_model(path), {}, {}
    return read_feedme(path, feedme_version=feedme_version)
