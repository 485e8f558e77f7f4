"""Config loading, overrides, validation and argument parsing: no Spark needed."""

from __future__ import annotations

import pytest

from jobs.segment_customers import job_config, parse_args
from segmentation.config import DEFAULTS, candidate_ks, load_config, validate_config
from segmentation.errors import ConfigError

from .conftest import REPO


def test_defaults_are_valid_and_sweep_two_to_ten():
    cfg = validate_config(load_config(None))
    assert candidate_ks(cfg["model"]) == list(range(2, 11))
    assert cfg["model"]["seed"] == 42
    assert cfg["cleaning"] == {"drop_duplicates": True, "returns": "net"}
    assert cfg["input"]["path"].endswith("segmentation/data/online_retail/part-*.parquet")


def test_online_retail_preset_matches_the_defaults_except_paths():
    preset = validate_config(load_config(REPO / "conf" / "online_retail.yaml"))
    defaults = validate_config(load_config(None))
    preset["input"]["path"] = defaults["input"]["path"]
    assert preset == defaults


def test_unknown_key_is_an_error_naming_it(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  kk: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'model.kk'"):
        load_config(path)


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("model: {k_min: 5, k_max: 3}", "invalid k range: k_min 5 is greater than k_max 3"),
        ("model: {k: 1}", r"model.k must be an integer >= 2, got 1"),
        ("cleaning: {returns: sometimes}", "cleaning.returns must be 'net' or 'gross'"),
        ("input: {format: xml}", "input.format must be one of csv, parquet, orc, json, jdbc, got 'xml'"),
        (
            "input: {columns: {customer_id: C, timestamp: T, quantity: Q, amount: Total}}",
            "map either input.columns.quantity",
        ),
        # the user's mapping is the mapping: no built-in default fills a role it leaves out
        (
            "input: {columns: {amount: Total}}",
            "input.columns.customer_id and input.columns.timestamp are required",
        ),
        ("input: {csv: {decimal: ';'}}", "input.csv.decimal must be '.' or ',', got ';'"),
        (
            "input: {csv: {delimiter: ',', decimal: ','}}",
            "input.csv.decimal and input.csv.delimiter cannot both",
        ),
        ("input: {csv: {multiline: maybe}}", "input.csv.multiline must be true or false, got 'maybe'"),
        ("input: {columns: {colour: C}}", "unknown config key 'input.columns.colour'"),
        ("prepare: {features: [age]}", "unknown feature 'age'"),
        ("prepare: {cap_quantiles: [0.9, 0.1]}", "cap_quantiles must be"),
        ("snapshot_date: 2011-13-01", r"invalid value: month must be in 1..12 \(dates are YYYY-MM-DD\)"),
        ("snapshot_date: 1st of May", "snapshot date must be YYYY-MM-DD"),
        ("model: {sweep_sample: 10}", r"model.sweep_sample must be an integer >= 1000, got 10"),
        (
            "model: {min_cluster_share: 0.6}",
            r"model.min_cluster_share must be a number in \[0, 0.5\], got 0.6",
        ),
        ("model: {stability_fits: -1}", "model.stability_fits must be an integer >= 0, got -1"),
        (
            "model: {driver_sweep_max_rows: 1.5}",
            "model.driver_sweep_max_rows must be an integer >= 0, got 1.5",
        ),
        ("model: {outliers: drop}", "model.outliers must be 'exclude' or 'keep', got 'drop'"),
        ("output: {report: 'no'}", "output.report must be true or false, got 'no'"),
        ("model: {min_stabilty: 0.5}", "unknown config key 'model.min_stabilty'"),
        # what the typed model (segmentation/schema.py) checks: a wrong type names its full key
        ("model: {tol: small}", r"config key 'model.tol': input should be a valid number.*got 'small'"),
        ("model: {tol: 0}", r"config key 'model.tol': input should be greater than 0, got 0"),
        ("input: {time_zone: [UTC]}", r"config key 'input.time_zone': input should be a valid string"),
        ("catalog: {metastore: 3}", r"config key 'catalog.metastore': input should be a valid string, got 3"),
    ],
)
def test_invalid_values_are_explained(tmp_path, yaml_text, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text + "\n")
    with pytest.raises(ConfigError, match=message):
        validate_config(load_config(path))


def test_amount_mapping_replaces_quantity_and_price(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("input:\n  columns: {customer_id: Customer, timestamp: When, amount: 'Order Total'}\n")
    cfg = validate_config(load_config(path))
    # only the roles the mapping names are mapped: no quantity, price or order id from the built-in defaults
    assert cfg["input"]["columns"] == {
        "customer_id": "Customer",
        "order_id": None,
        "timestamp": "When",
        "quantity": None,
        "unit_price": None,
        "amount": "Order Total",
        "product_id": None,
        "product_name": None,
    }
    # without input.columns the built-in (Online Retail) mapping applies
    assert validate_config(load_config(None))["input"]["columns"]["order_id"] == "InvoiceNo"


def test_command_line_overrides_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {k: 4}\noutput: {path: out1}\n")
    args = parse_args(
        [
            "--config",
            str(path),
            "--k-min",
            "3",
            "--k-max",
            "5",
            "--seed",
            "7",
            "--output",
            "out2",
            "--snapshot-date",
            "2011-06-01",
            "--input",
            "x.csv",
            "--input-format",
            "csv",
        ]
    )
    cfg = job_config(args)
    assert candidate_ks(cfg["model"]) == [3, 4, 5]
    assert cfg["model"]["seed"] == 7
    assert cfg["output"]["path"] == "out2"
    assert cfg["snapshot_date"] == "2011-06-01"
    assert (cfg["input"]["path"], cfg["input"]["format"]) == ("x.csv", "csv")
    assert DEFAULTS["model"]["k"] is None  # defaults are never mutated


def test_parse_args_rejects_k_with_range(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(["--k", "3", "--k-min", "2"])
    assert exc.value.code == 2
    assert "--k cannot be combined with --k-min/--k-max" in capsys.readouterr().err


def test_parse_args_rejects_bad_values(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--snapshot-date", "12/01/2011"])
    assert "expected YYYY-MM-DD, got '12/01/2011'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--k-min", "6", "--k-max", "3"])
    assert "invalid k range: --k-min 6 is greater than --k-max 3" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--k", "1"])
    assert "must be >= 2, got 1" in capsys.readouterr().err


def test_catalog_and_identity_keys(tmp_path):
    cfg = validate_config(load_config(None))
    assert cfg["catalog"]["database"] == "segmentation" and cfg["catalog"]["mode"] is None
    assert cfg["catalog"]["metastore"] == "output/_catalog"
    assert cfg["identity"]["max_distance"] == 1.0
    path = tmp_path / "c.yaml"
    path.write_text("catalog: {database: crm, metastore: /var/lib/meta}\noutput: {path: 's3a://b/seg'}\n")
    cfg = validate_config(load_config(path))
    assert (cfg["catalog"]["database"], cfg["catalog"]["metastore"]) == ("crm", "/var/lib/meta")
    path.write_text("output: {path: 's3a://b/seg'}\n")
    assert validate_config(load_config(path))["catalog"]["metastore"] == "metastore"
    path.write_text("catalog: {database: 'x; DROP'}\n")
    with pytest.raises(ConfigError, match=r"catalog.database must be letters, digits and _, got 'x; DROP'"):
        validate_config(load_config(path))
    path.write_text("identity: {max_distance: -1}\n")
    with pytest.raises(ConfigError, match=r"identity.max_distance must be a number >= 0, got -1"):
        validate_config(load_config(path))


def _keys(mapping, prefix=""):
    out = set()
    for key, value in mapping.items():
        out.add(prefix + key)
        if isinstance(value, dict):
            out |= _keys(value, f"{prefix}{key}.")
    return out


def test_template_lists_every_key_and_validates():
    import yaml

    text = (REPO / "conf" / "template.yaml").read_text(encoding="utf-8")
    assert _keys(yaml.safe_load(text)) == _keys(DEFAULTS)
    cfg = validate_config(load_config(REPO / "conf" / "template.yaml"))
    assert (cfg["input"]["format"], cfg["input"]["timestamp_format"]) == ("csv", "auto")
