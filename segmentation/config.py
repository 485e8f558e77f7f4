"""Job configuration: defaults, safe YAML loading, command-line overrides and validation.

Hands the job the validated nested mapping of the typed model `schema.JobConfig` (its keys, types and defaults);
unknown keys are errors naming their full path, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import posixpath
import re
from pathlib import Path
from typing import Any, get_args

import yaml

from segmentation import jdbc as jdbc_conn
from segmentation.errors import ConfigError
from segmentation.schema import (
    Format,
    InputSection,
    Method,
    check_types,
    defaults,
)

#: Per-customer features the job computes; any of them can be a model feature.
FEATURE_COLUMNS = (
    "recency_days",
    "frequency",
    "tenure_days",
    "gross",
    "returns",
    "monetary",
    "avg_order_value",
)


#: `model.method`: the Spark ML clustering methods the job can use.
METHODS: tuple[str, ...] = get_args(Method)

#: `input.kind`: a transaction log aggregated per customer, or a table with one row per customer.
INPUT_KINDS: tuple[str, ...] = get_args(InputSection.model_fields["kind"].annotation)

#: `input.format`: what Spark reads natively (JSON: one object per line).
INPUT_FORMATS: tuple[str, ...] = get_args(Format)


#: Every key with its default (the typed model `schema.JobConfig` defines them).
DEFAULTS: dict[str, Any] = defaults()


def _merge(base: dict[str, Any], override: dict[str, Any], where: str = "") -> dict[str, Any]:
    """Deep-merge `override` into a copy of `base`; keys absent from `base` are errors."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        path = f"{where}{key}"
        if key not in base:
            known = ", ".join(sorted(base))
            raise ConfigError(f"unknown config key '{path}' (known here: {known})")
        if isinstance(base[key], dict):
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{path}' must be a mapping, got {type(value).__name__}")
            merged[key] = _merge(base[key], value, f"{path}.")
        else:
            merged[key] = value
    return merged


def load_config(path: str | Path | None) -> dict[str, Any]:
    """Load a YAML config (safe loader) over the defaults; without a path, the defaults alone."""
    if path is None:
        return copy.deepcopy(DEFAULTS)
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}".replace("\n", " ")) from exc
    except ValueError as exc:  # e.g. a date-looking value that is no date: 2011-13-01
        raise ConfigError(f"config file {path} has an invalid value: {exc} (dates are YYYY-MM-DD)") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    merged = _merge(DEFAULTS, raw)
    given = (raw.get("input") or {}).get("columns") if isinstance(raw.get("input"), dict) else None
    if given:
        # the user's mapping is the mapping: a role it does not name is not mapped (no built-in default under it)
        merged["input"]["columns"] = {role: given.get(role) for role in DEFAULTS["input"]["columns"]}
    return merged


def apply_overrides(cfg: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """Apply command-line overrides (None means not given) to a loaded config."""
    cfg = copy.deepcopy(cfg)
    mapping = {
        "input": ("input", "path"),
        "input_format": ("input", "format"),
        "output": ("output", "path"),
        "snapshot_date": ("snapshot_date",),
        "k": ("model", "k"),
        "k_min": ("model", "k_min"),
        "k_max": ("model", "k_max"),
        "seed": ("model", "seed"),
    }
    for name, value in overrides.items():
        if value is None:
            continue
        *parents, leaf = mapping[name]
        target = cfg
        for part in parents:
            target = target[part]
        target[leaf] = value
    if overrides.get("input") is not None:
        # a path on the command line is what to read: not the config's table
        cfg["input"]["table"] = None
        if cfg["input"]["format"] == "jdbc" and overrides.get("input_format") is None:
            raise ConfigError("--input is a path but the config reads over JDBC: add --input-format")
    range_given = overrides.get("k_min") is not None or overrides.get("k_max") is not None
    if range_given and overrides.get("k") is None:
        # an explicit range on the command line wins over a fixed k in the file
        cfg["model"]["k"] = None
    return cfg


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _validate_source(inp: dict[str, Any]) -> None:
    """Exactly one place to read from: `input.table`, `input.format: jdbc` (+ `input.jdbc`) or `input.path`."""
    if inp.get("table"):
        if not isinstance(inp["table"], str) or not re.fullmatch(r"[\w]+(\.[\w]+){0,2}", inp["table"]):
            raise ConfigError(
                f"input.table must be a table name such as db.transactions, got {inp['table']!r}"
            )
        if inp["format"] == "jdbc":
            raise ConfigError(
                "input.table reads the session's catalog; for a JDBC table use input.jdbc.table"
            )
        return
    if inp["format"] != "jdbc":
        if not inp.get("path"):
            raise ConfigError("input.path is required (or input.table, or input.format: jdbc)")
        return
    jdbc = inp["jdbc"]
    jdbc_conn.validate(jdbc, "input.jdbc")
    if bool(jdbc.get("table")) == bool(jdbc.get("query")):
        raise ConfigError("input.jdbc needs one of table or query (not both)")
    partitioned = [
        jdbc.get(k) is not None for k in ("partition_column", "lower_bound", "upper_bound", "num_partitions")
    ]
    if any(partitioned) and not all(partitioned):
        raise ConfigError(
            "a partitioned JDBC read needs all of input.jdbc.partition_column, lower_bound, upper_bound "
            "and num_partitions"
        )
    if all(partitioned) and jdbc.get("query"):
        raise ConfigError(
            "input.jdbc.partition_column works with input.jdbc.table (Spark cannot split a query)"
        )


def resolve_catalog_mode(catalog: dict[str, Any], master: str) -> str:
    """`catalog.mode`, with null decided by the master: `local` on a local master, `session` elsewhere (a
    cluster has a metastore of its own); `catalog.enabled: false` is `off`."""
    if catalog.get("mode"):
        return catalog["mode"]
    if catalog.get("enabled") is False:
        return "off"
    return "local" if master.startswith("local") else "session"


def validate_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check types and combinations; return the config with normalised values."""
    inp = cfg["input"]
    if inp["format"] not in INPUT_FORMATS:
        raise ConfigError(f"input.format must be one of {', '.join(INPUT_FORMATS)}, got {inp['format']!r}")
    _validate_source(inp)
    _validate_csv(inp["csv"], "input.csv")
    if not isinstance(inp["timestamp_format"], str) or not inp["timestamp_format"].strip():
        raise ConfigError(
            f"input.timestamp_format must be 'auto' or a pattern, got {inp['timestamp_format']!r}"
        )
    if inp["kind"] not in INPUT_KINDS:
        raise ConfigError(f"input.kind must be one of {', '.join(INPUT_KINDS)}, got {inp['kind']!r}")
    snap = cfg.get("snapshot_date")
    if snap is not None:
        if isinstance(snap, dt.date):
            snap = snap.isoformat()
        try:
            cfg["snapshot_date"] = dt.date.fromisoformat(str(snap)).isoformat()
        except ValueError as exc:
            raise ConfigError(f"snapshot date must be YYYY-MM-DD, got {snap!r}") from exc
    _check_output_outside_input(cfg)
    if inp["kind"] == "customers":
        return _validate_customers(cfg)
    cols = inp["columns"]
    if not cols.get("customer_id") or not cols.get("timestamp"):
        raise ConfigError("input.columns.customer_id and input.columns.timestamp are required")
    has_amount = bool(cols.get("amount"))
    some_qp = bool(cols.get("quantity")) or bool(cols.get("unit_price"))
    all_qp = bool(cols.get("quantity")) and bool(cols.get("unit_price"))
    if (has_amount and some_qp) or (not has_amount and not all_qp):
        raise ConfigError(
            "map either input.columns.quantity + input.columns.unit_price or input.columns.amount "
            f"(got quantity={cols.get('quantity')!r}, unit_price={cols.get('unit_price')!r}, "
            f"amount={cols.get('amount')!r})"
        )
    if has_amount:
        cols["quantity"] = None
        cols["unit_price"] = None
    if cfg["cleaning"]["returns"] not in ("net", "gross"):
        raise ConfigError(f"cleaning.returns must be 'net' or 'gross', got {cfg['cleaning']['returns']!r}")
    if not isinstance(cfg["cleaning"]["drop_duplicates"], bool):
        raise ConfigError("cleaning.drop_duplicates must be true or false")

    demo = inp["demographics"]
    demo_numeric: list[str] = []
    if demo.get("path"):
        if demo["format"] not in INPUT_FORMATS:
            raise ConfigError(
                f"input.demographics.format must be one of {', '.join(INPUT_FORMATS)}, got {demo['format']!r}"
            )
        if not demo.get("customer_id"):
            raise ConfigError("input.demographics.customer_id is required")
        demo_numeric = _names(demo["features"], "input.demographics.features")
        demo_categorical = _names(demo["categorical"], "input.demographics.categorical")
        clash = sorted(set(demo_numeric + demo_categorical) & set(FEATURE_COLUMNS + ("customer_id",)))
        if clash:
            raise ConfigError(f"input.demographics columns {clash} clash with the transaction features")
        if not demo_numeric and not demo_categorical:
            raise ConfigError("input.demographics needs features and/or categorical columns")
    prep = cfg["prepare"]
    features = list(prep["features"] or [])
    if not features:
        raise ConfigError("prepare.features must list at least one feature")
    allowed = FEATURE_COLUMNS + tuple(demo_numeric)
    for name in features + list(prep["log1p"] or []):
        if name not in allowed:
            raise ConfigError(f"unknown feature {name!r}; choose from {', '.join(allowed)}")
    prep["log1p"] = [f for f in (prep["log1p"] or []) if f in features]
    _check_caps(prep)
    return _validate_model_and_output(cfg)


def _validate_csv(csv: dict[str, Any], key: str) -> None:
    if not isinstance(csv["delimiter"], str) or len(csv["delimiter"]) != 1:
        raise ConfigError(f"{key}.delimiter must be one character, got {csv['delimiter']!r}")
    if csv["decimal"] not in (".", ","):
        raise ConfigError(f"{key}.decimal must be '.' or ',', got {csv['decimal']!r}")
    if csv["decimal"] == csv["delimiter"]:
        raise ConfigError(f"{key}.decimal and {key}.delimiter cannot both be {csv['delimiter']!r}")
    if not isinstance(csv["multiline"], bool):
        raise ConfigError(f"{key}.multiline must be true or false, got {csv['multiline']!r}")
    if not isinstance(csv["encoding"], str) or not csv["encoding"]:
        raise ConfigError(f"{key}.encoding must name a character set (UTF-8, ISO-8859-1, ...)")


_GLOB = re.compile(r"[*?\[{]")


def _location(path: str) -> tuple[str, str]:
    """(scheme, absolute path) of a file, folder or glob: a glob stands for the folder above its first wildcard."""
    match = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://([^/]*)(.*)$", path)
    scheme, rest = (f"{match.group(1)}://{match.group(2)}", match.group(3)) if match else ("", path)
    if scheme.startswith("file://"):
        scheme = ""
    wildcard = _GLOB.search(rest)
    if wildcard:
        rest = rest[: wildcard.start()].rsplit("/", 1)[0] or "/"
    if not scheme:
        rest = os.path.abspath(os.path.expanduser(rest))
    return scheme, posixpath.normpath(rest)


def _inside(path: tuple[str, str], root: tuple[str, str]) -> bool:
    return path[0] == root[0] and (path[1] == root[1] or path[1].startswith(root[1].rstrip("/") + "/"))


def _check_output_outside_input(cfg: dict[str, Any]) -> None:
    """Refuse an output equal to, inside or containing an input, before anything is read or written."""
    if not cfg["output"].get("path"):
        raise ConfigError("output.path is required")
    output = _location(str(cfg["output"]["path"]))
    inputs = [
        (
            "input.path",
            None if cfg["input"].get("table") or cfg["input"]["format"] == "jdbc" else cfg["input"]["path"],
        ),
        ("input.demographics.path", cfg["input"]["demographics"]["path"]),
    ]
    for key, value in inputs:
        if not value:
            continue
        source = _location(str(value))
        if _inside(output, source) or _inside(source, output):
            where = "is" if output == source else ("is inside" if _inside(output, source) else "contains")
            raise ConfigError(
                f"output path {cfg['output']['path']} {where} the input ({key} {value}): "
                "choose an output folder outside the input"
            )


def _names(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{key} must be a list of column names, got {value!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{key} lists a column twice: {value!r}")
    return list(value)


def _validate_customers(cfg: dict[str, Any]) -> dict[str, Any]:
    """`input.kind: customers`: the columns to read and the model features among them."""
    inp, prep = cfg["input"], cfg["prepare"]
    if not inp["columns"].get("customer_id"):
        raise ConfigError("input.columns.customer_id is required")
    numeric = _names(inp["features"], "input.features")
    categorical = _names(inp["categorical"], "input.categorical")
    inp["features"], inp["categorical"] = numeric, categorical
    both = sorted(set(numeric) & set(categorical))
    if both:
        raise ConfigError(f"column(s) {both} are in both input.features and input.categorical")
    if not numeric and not categorical:
        raise ConfigError("input.kind customers needs input.features and/or input.categorical")
    if inp["missing"] not in ("reject", "impute"):
        raise ConfigError(f"input.missing must be 'reject' or 'impute', got {inp['missing']!r}")
    if inp["impute_strategy"] not in ("mean", "median", "mode"):
        raise ConfigError(
            f"input.impute_strategy must be mean, median or mode, got {inp['impute_strategy']!r}"
        )
    available = numeric + categorical
    features = _names(prep["features"], "prepare.features")
    if features == DEFAULTS["prepare"]["features"]:
        features = available  # the transaction default does not apply: cluster on every listed column
    if not features:
        raise ConfigError("prepare.features must list at least one feature")
    for name in features:
        if name not in available:
            raise ConfigError(
                f"unknown feature {name!r}; with input.kind customers choose from input.features and "
                f"input.categorical: {', '.join(available)}"
            )
    prep["features"] = features
    log1p = [f for f in _names(prep["log1p"], "prepare.log1p") if f in features]
    bad = [f for f in log1p if f in categorical]
    if bad:
        raise ConfigError(f"prepare.log1p applies to numeric features only, not {bad}")
    prep["log1p"] = log1p
    _check_caps(prep)
    return _validate_model_and_output(cfg)


def _check_caps(prep: dict[str, Any]) -> None:
    caps = prep["cap_quantiles"]
    if caps is not None:
        if (
            not isinstance(caps, (list, tuple))
            or len(caps) != 2
            or not all(isinstance(q, (int, float)) for q in caps)
            or not 0.0 <= caps[0] < caps[1] <= 1.0
        ):
            raise ConfigError(
                f"prepare.cap_quantiles must be [lower, upper] with 0 <= lower < upper <= 1, got {caps!r}"
            )
        prep["cap_quantiles"] = [float(caps[0]), float(caps[1])]


def _validate_model_and_output(cfg: dict[str, Any]) -> dict[str, Any]:
    model = cfg["model"]
    if model["method"] not in METHODS:
        raise ConfigError(f"model.method must be one of {', '.join(METHODS)}, got {model['method']!r}")
    compare = model["compare"] or []
    if not isinstance(compare, list) or any(m not in METHODS for m in compare):
        raise ConfigError(f"model.compare must list methods among {', '.join(METHODS)}, got {compare!r}")
    model["compare"] = list(dict.fromkeys(compare))
    if model["k"] is not None:
        _positive_int(model["k"], "model.k", 2)
    else:
        k_min = _positive_int(model["k_min"], "model.k_min", 2)
        k_max = _positive_int(model["k_max"], "model.k_max", 2)
        if k_min > k_max:
            raise ConfigError(f"invalid k range: k_min {k_min} is greater than k_max {k_max}")
    _positive_int(model["seed"], "model.seed", 0)
    _positive_int(model["max_iter"], "model.max_iter", 1)
    _positive_int(model["partitions"], "model.partitions", 1)
    _positive_int(model["parallelism"], "model.parallelism", 1)
    _positive_int(model["driver_sweep_max_rows"], "model.driver_sweep_max_rows", 0)
    if model["sweep_sample"] is not None:
        _positive_int(model["sweep_sample"], "model.sweep_sample", 1000)
    _positive_int(model["stability_fits"], "model.stability_fits", 0)
    for name, low, high in (
        ("min_cluster_share", 0.0, 0.5),
        ("min_stability", -1.0, 1.0),
        ("min_silhouette", -1.0, 1.0),
        ("min_gap", -10.0, 10.0),
    ):
        value = model[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ConfigError(f"model.{name} must be a number in [{low:g}, {high:g}], got {value!r}")
        model[name] = float(value)
    if model["outliers"] not in ("exclude", "keep"):
        raise ConfigError(f"model.outliers must be 'exclude' or 'keep', got {model['outliers']!r}")
    _positive_int(cfg["naming"]["lapsed_days"], "naming.lapsed_days", 1)
    _positive_int(cfg["naming"]["lost_max_orders"], "naming.lost_max_orders", 1)
    max_distance = cfg["identity"]["max_distance"]
    if isinstance(max_distance, bool) or not isinstance(max_distance, (int, float)) or max_distance < 0:
        raise ConfigError(f"identity.max_distance must be a number >= 0, got {max_distance!r}")
    cfg["identity"]["max_distance"] = float(max_distance)
    catalog = cfg["catalog"]
    if catalog["enabled"] is not None and not isinstance(catalog["enabled"], bool):
        raise ConfigError("catalog.enabled must be true or false")
    if catalog["mode"] not in (None, "local", "session", "off"):
        raise ConfigError(f"catalog.mode must be local, session or off, got {catalog['mode']!r}")
    if catalog["enabled"] is False and catalog["mode"] not in (None, "off"):
        raise ConfigError(
            f"catalog.enabled is false but catalog.mode is {catalog['mode']!r}: keep one of them"
        )
    if catalog["enabled"] is True and catalog["mode"] == "off":
        raise ConfigError("catalog.enabled is true but catalog.mode is 'off': keep one of them")
    if cfg["output"]["jdbc"].get("url"):
        jdbc_conn.validate(cfg["output"]["jdbc"], "output.jdbc")
        schema = cfg["output"]["jdbc"]["schema"]
        if not isinstance(schema, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", schema):
            raise ConfigError(f"output.jdbc.schema must be letters, digits and _, got {schema!r}")
    if not isinstance(catalog["database"], str) or not catalog["database"].replace("_", "").isalnum():
        raise ConfigError(f"catalog.database must be letters, digits and _, got {catalog['database']!r}")
    if not cfg["output"].get("path"):
        raise ConfigError("output.path is required")
    if not isinstance(cfg["output"]["report"], bool):
        raise ConfigError(f"output.report must be true or false, got {cfg['output']['report']!r}")
    if not catalog.get("metastore"):
        output = str(cfg["output"]["path"])
        local = "://" not in output or output.startswith("file:")
        catalog["metastore"] = (
            f"{output.removeprefix('file://').rstrip('/')}/_catalog" if local else "metastore"
        )
    check_types(cfg)
    return cfg


def candidate_ks(model_cfg: dict[str, Any]) -> list[int]:
    """The k values to fit: the fixed k alone, or the configured range."""
    if model_cfg["k"] is not None:
        return [int(model_cfg["k"])]
    return list(range(int(model_cfg["k_min"]), int(model_cfg["k_max"]) + 1))
