"""Job configuration: defaults, safe YAML loading, command-line overrides and validation.

Hands a plain nested dict to the job; every key the job reads has a default here, and unknown keys are
errors so that a typo in a config file never silently falls back to a default.
"""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import yaml

from segmentation.errors import ConfigError

BUNDLED_DATA = Path(__file__).resolve().parent / "data" / "online_retail"
#: The bundled files (the folder also holds the data's README with its licence).
BUNDLED_INPUT = str(BUNDLED_DATA / "part-*.parquet")

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

DEFAULTS: dict[str, Any] = {
    "input": {
        "path": BUNDLED_INPUT,
        "format": "parquet",
        "timestamp_format": "yyyy-MM-dd HH:mm:ss",
        "time_zone": "UTC",
        "csv": {"delimiter": ",", "encoding": "UTF-8"},
        "columns": {
            "customer_id": "CustomerID",
            "order_id": "InvoiceNo",
            "timestamp": "InvoiceDate",
            "quantity": "Quantity",
            "unit_price": "UnitPrice",
            "amount": None,
        },
        "return_order_prefix": "C",
    },
    "cleaning": {"drop_duplicates": True, "returns": "net"},
    "snapshot_date": None,
    "prepare": {
        "features": ["recency_days", "frequency", "monetary"],
        "log1p": ["recency_days", "frequency", "monetary"],
        "cap_quantiles": [0.0, 0.995],
    },
    "model": {
        "k": None,
        "k_min": 2,
        "k_max": 10,
        "seed": 42,
        "max_iter": 50,
        "tol": 1e-4,
        # customers are laid out in this many partitions, sorted by id: KMeans results depend on the layout
        "partitions": 2,
        # k values fitted at once
        "parallelism": 2,
    },
    "output": {"path": "output"},
    # stable segment ids: a new center within this distance (scaled space) of a previous one is the same segment
    "identity": {"max_distance": 1.0},
    # external tables over the output in a Hive metastore (a persistent local Derby database by default)
    # metastore null: `<output.path>/_catalog` for a local output, else `metastore` in the working directory
    "catalog": {"enabled": True, "database": "segmentation", "metastore": None},
}


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
    return _merge(DEFAULTS, raw)


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
    range_given = overrides.get("k_min") is not None or overrides.get("k_max") is not None
    if range_given and overrides.get("k") is None:
        # an explicit range on the command line wins over a fixed k in the file
        cfg["model"]["k"] = None
    return cfg


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def validate_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check types and combinations; return the config with normalised values."""
    inp = cfg["input"]
    if not inp.get("path"):
        raise ConfigError("input.path is required")
    if inp["format"] not in ("csv", "parquet"):
        raise ConfigError(f"input.format must be 'csv' or 'parquet', got {inp['format']!r}")
    cols = inp["columns"]
    if not cols.get("customer_id") or not cols.get("timestamp"):
        raise ConfigError("input.columns.customer_id and input.columns.timestamp are required")
    has_qp = bool(cols.get("quantity")) and bool(cols.get("unit_price"))
    has_amount = bool(cols.get("amount"))
    if has_qp == has_amount:
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

    snap = cfg.get("snapshot_date")
    if snap is not None:
        if isinstance(snap, dt.date):
            snap = snap.isoformat()
        try:
            cfg["snapshot_date"] = dt.date.fromisoformat(str(snap)).isoformat()
        except ValueError as exc:
            raise ConfigError(f"snapshot date must be YYYY-MM-DD, got {snap!r}") from exc

    prep = cfg["prepare"]
    features = list(prep["features"] or [])
    if not features:
        raise ConfigError("prepare.features must list at least one feature")
    for name in features + list(prep["log1p"] or []):
        if name not in FEATURE_COLUMNS:
            raise ConfigError(f"unknown feature {name!r}; choose from {', '.join(FEATURE_COLUMNS)}")
    prep["log1p"] = [f for f in (prep["log1p"] or []) if f in features]
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

    model = cfg["model"]
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
    max_distance = cfg["identity"]["max_distance"]
    if isinstance(max_distance, bool) or not isinstance(max_distance, (int, float)) or max_distance < 0:
        raise ConfigError(f"identity.max_distance must be a number >= 0, got {max_distance!r}")
    cfg["identity"]["max_distance"] = float(max_distance)
    catalog = cfg["catalog"]
    if not isinstance(catalog["enabled"], bool):
        raise ConfigError("catalog.enabled must be true or false")
    if not isinstance(catalog["database"], str) or not catalog["database"].replace("_", "").isalnum():
        raise ConfigError(f"catalog.database must be letters, digits and _, got {catalog['database']!r}")
    if not cfg["output"].get("path"):
        raise ConfigError("output.path is required")
    if not catalog.get("metastore"):
        output = str(cfg["output"]["path"])
        local = "://" not in output or output.startswith("file:")
        catalog["metastore"] = (
            f"{output.removeprefix('file://').rstrip('/')}/_catalog" if local else "metastore"
        )
    return cfg


def candidate_ks(model_cfg: dict[str, Any]) -> list[int]:
    """The k values to fit: the fixed k alone, or the configured range."""
    if model_cfg["k"] is not None:
        return [int(model_cfg["k"])]
    return list(range(int(model_cfg["k_min"]), int(model_cfg["k_max"]) + 1))
