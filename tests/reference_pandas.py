"""An independent pure-pandas reference ("oracle") for the cleaning and feature rules of the segmentation job.

The tests compare what the Spark job produces for the Online Retail CSV layout (InvoiceNo, StockCode,
Description, Quantity, InvoiceDate, UnitPrice, CustomerID, Country) with what this module computes. It shares
no code with `segmentation`: it re-implements the documented rules from scratch, in pandas, vectorised.

Rules:

* Every input row gets at most one reject reason, the first that applies in `REJECT_REASONS` order:
  `malformed_row` (wrong number of fields), `missing_customer_id` (empty or whitespace-only CustomerID),
  `invalid_timestamp` (InvoiceDate, trimmed, not parseable as `%Y-%m-%d %H:%M:%S`), `invalid_number`
  (Quantity or UnitPrice, trimmed, not a decimal number, or Quantity == 0), `non_positive_price`
  (UnitPrice <= 0), `duplicate` (all eight original columns equal, as strings, to an earlier row that passed
  the checks above; the first copy is kept) and, only when a snapshot date is given, `after_snapshot`
  (calendar date of InvoiceDate >= snapshot date).
* Customer id: the trimmed CustomerID with a trailing ".0" removed (`^(\\d+)\\.0+$` -> the digits).
* Line value = Quantity * UnitPrice. A line is a return when Quantity < 0 or the trimmed InvoiceNo starts with
  "C"; otherwise a purchase. A return's value is abs(line value).
* Per customer, over accepted rows: frequency = distinct InvoiceNo among purchase lines; gross = sum of
  purchase values; returns = sum of return values; monetary = gross - returns; avg_order_value = gross /
  frequency (NaN when frequency is 0); recency_days / tenure_days = days from the last / first purchase date
  (calendar date, naive timestamps) to the snapshot date, missing without a purchase. Money sums are exact
  (Decimal).
* Snapshot date: the given one, else the day after the latest InvoiceDate among all accepted rows.
* excluded_reason: "no_purchases" when frequency == 0, else "non_positive_monetary" when monetary <= 0, else
  None.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
import warnings
from dataclasses import dataclass, field
from decimal import Context, Decimal, localcontext
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = [
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
]

#: Every reject reason, in the order the checks are applied (the first match wins).
REJECT_REASONS = (
    "malformed_row",
    "missing_customer_id",
    "invalid_timestamp",
    "invalid_number",
    "non_positive_price",
    "duplicate",
    "after_snapshot",
)

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
# a plain decimal number: optional sign, digits with an optional fraction, optional exponent (no nan / inf)
NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
CUSTOMER_ID_FLOAT = r"^(\d+)\.0+$"
RETURN_PREFIX = "C"

FEATURE_COLUMNS = [
    "recency_days",
    "frequency",
    "tenure_days",
    "gross",
    "returns",
    "monetary",
    "avg_order_value",
    "excluded_reason",
]


@dataclass
class Reference:
    """What the rules give for one input: row accounting, the snapshot date and one row per customer."""

    input_rows: int
    rejects: dict[str, int]
    accepted_rows: int
    snapshot_date: str
    customers: pd.DataFrame = field(repr=False)

    @property
    def excluded_counts(self) -> dict[str, int]:
        """Customers per excluded_reason (only reasons that occur)."""
        return {str(k): int(v) for k, v in self.customers["excluded_reason"].dropna().value_counts().items()}

    @property
    def clustered(self) -> pd.DataFrame:
        """The customers that are not excluded, i.e. the ones the model sees."""
        return self.customers[self.customers["excluded_reason"].isna()]


def _field_counts(path: Path) -> list[int]:
    """Fields per data row, by the standard csv module (blank lines skipped, as pandas and Spark do)."""
    with path.open(newline="", encoding="utf-8") as handle:
        counts = [len(record) for record in csv.reader(handle) if record]
    return counts[1:]


def _read_file(path: Path) -> tuple[pd.DataFrame, pd.Series]:
    """One CSV as strings (empty fields stay ""), one row per data line; and which rows are malformed.

    pandas cannot be trusted to flag a wrong field count (a short row is padded; a long first row is
    truncated, or without `index_col=False` even shifts into the index), so the counts come from the csv
    module and pandas only has to keep one row per record: long rows are truncated (the fast parser refuses
    them, the python one is told to cut them), short ones padded.
    """
    options = {"dtype": str, "keep_default_na": False, "index_col": False, "encoding": "utf-8"}
    width = len(COLUMNS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pd.errors.ParserWarning)
        try:
            frame = pd.read_csv(path, **options)
        except pd.errors.ParserError:
            frame = pd.read_csv(path, engine="python", on_bad_lines=lambda fields: fields[:width], **options)
    if list(frame.columns) != COLUMNS:
        raise ValueError(f"{path}: columns {list(frame.columns)}, expected {COLUMNS}")
    counts = _field_counts(path)
    if len(counts) != len(frame):
        raise ValueError(f"{path}: pandas read {len(frame)} rows, the csv module {len(counts)}")
    return frame, pd.Series(counts, dtype="int64") != width


def read_csv_dir(csv_dir: str | Path) -> tuple[pd.DataFrame, pd.Series]:
    """All `*.csv` files of a directory in file-name order, concatenated; and the malformed-row mask."""
    paths = sorted(Path(csv_dir).glob("*.csv"))
    if not paths:
        raise FileNotFoundError(f"no *.csv files in {csv_dir}")
    frames, malformed = zip(*(_read_file(path) for path in paths), strict=True)
    return pd.concat(frames, ignore_index=True), pd.concat(malformed, ignore_index=True)


def _parse_number(trimmed: pd.Series) -> pd.Series:
    """Trimmed decimal text -> float64 (for the checks; money is summed in Decimal); anything else -> NaN."""
    return trimmed.where(trimmed.str.fullmatch(NUMBER)).astype("float64")


def classify(raw: pd.DataFrame, malformed: pd.Series, snapshot_date: str | None) -> pd.DataFrame:
    """The raw rows with parsed columns and `reject_reason` (None when accepted)."""
    df = pd.DataFrame(index=raw.index)
    text = raw[COLUMNS].fillna("")

    customer = text["CustomerID"].str.strip()
    df["customer_id"] = customer.str.replace(CUSTOMER_ID_FLOAT, r"\1", regex=True)
    df["ts"] = pd.to_datetime(text["InvoiceDate"].str.strip(), format=TIMESTAMP_FORMAT, errors="coerce")
    df["quantity_text"] = text["Quantity"].str.strip()
    df["unit_price_text"] = text["UnitPrice"].str.strip()
    df["quantity"] = _parse_number(df["quantity_text"])
    df["unit_price"] = _parse_number(df["unit_price_text"])
    df["invoice"] = text["InvoiceNo"].str.strip()

    checks = [
        ("malformed_row", malformed),
        ("missing_customer_id", customer == ""),
        ("invalid_timestamp", df["ts"].isna()),
        ("invalid_number", df["quantity"].isna() | df["unit_price"].isna() | (df["quantity"] == 0)),
        ("non_positive_price", df["unit_price"] <= 0),
    ]
    reason = pd.Series(None, index=raw.index, dtype="object")
    for name, mask in checks:
        reason = reason.mask(reason.isna() & mask.fillna(False).astype(bool), name)

    # duplicates only among rows that passed every check above; the first copy (in input order) is kept
    candidates = reason.isna()
    repeated = text.loc[candidates].duplicated(subset=COLUMNS, keep="first")
    reason.loc[repeated[repeated].index] = "duplicate"

    if snapshot_date is not None:
        cut = pd.Timestamp(snapshot_date)
        late = reason.isna() & (df["ts"].dt.normalize() >= cut)
        reason = reason.mask(late, "after_snapshot")

    df["reject_reason"] = reason
    return df


def _decimal_sum(values: pd.Series) -> Decimal:
    return sum(values, Decimal(0))


def customer_features(lines: pd.DataFrame, snapshot: pd.Timestamp) -> pd.DataFrame:
    """One row per customer of the accepted `lines` (columns customer_id, invoice, ts, quantity, unit_price,
    quantity_text, unit_price_text).

    Money is summed exactly, in `Decimal` from the CSV text, and only the results are turned into floats: with
    float sums a customer whose returns cancel their purchases (monetary exactly 0, so excluded as
    non_positive_monetary) could come out as 5.7e-14 and be clustered.
    """
    is_return = (lines["quantity"] < 0) | lines["invoice"].str.startswith(RETURN_PREFIX)
    purchase = ~is_return
    with localcontext(Context(prec=60)):
        value = pd.Series(
            [
                Decimal(q) * Decimal(p)
                for q, p in zip(lines["quantity_text"], lines["unit_price_text"], strict=True)
            ],
            index=lines.index,
            dtype="object",
        )
        frame = pd.DataFrame(
            {
                "customer_id": lines["customer_id"],
                "purchase_value": value.where(purchase, Decimal(0)),
                "return_value": value.abs().where(is_return, Decimal(0)),
                "purchase_invoice": lines["invoice"].where(purchase),
                "purchase_date": lines["ts"].dt.normalize().where(purchase),
            }
        )
        grouped = frame.groupby("customer_id", sort=True)
        out = pd.DataFrame(
            {
                "frequency": grouped["purchase_invoice"].nunique(dropna=True).astype("int64"),
                "gross_exact": grouped["purchase_value"].agg(_decimal_sum),
                "returns_exact": grouped["return_value"].agg(_decimal_sum),
                "first_purchase": grouped["purchase_date"].min(),
                "last_purchase": grouped["purchase_date"].max(),
            }
        )
        monetary_exact = out["gross_exact"] - out["returns_exact"]
    out.index.name = "customer_id"
    out["recency_days"] = (snapshot - out["last_purchase"]).dt.days.astype("Int64")
    out["tenure_days"] = (snapshot - out["first_purchase"]).dt.days.astype("Int64")
    out["gross"] = out["gross_exact"].astype("float64")
    out["returns"] = out["returns_exact"].astype("float64")
    out["monetary"] = monetary_exact.astype("float64")
    out["avg_order_value"] = (out["gross"] / out["frequency"].where(out["frequency"] > 0)).astype("float64")
    reason = np.select(
        [out["frequency"] == 0, monetary_exact <= 0], ["no_purchases", "non_positive_monetary"], default=""
    )
    out["excluded_reason"] = pd.Series(reason, index=out.index, dtype="object").where(reason != "", None)
    return out[FEATURE_COLUMNS]


def _check_date(value: str) -> str:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError(f"snapshot_date must be YYYY-MM-DD, got {value!r}")
    return dt.date.fromisoformat(value).isoformat()


def reference_online_retail(csv_dir: str | Path, snapshot_date: str | None = None) -> Reference:
    """Apply the cleaning and feature rules to every `*.csv` in `csv_dir` (Online Retail layout)."""
    raw, malformed = read_csv_dir(csv_dir)
    return _reference(raw, malformed, snapshot_date)


def reference_from_frame(raw: pd.DataFrame, snapshot_date: str | None = None) -> Reference:
    """The same rules on an already-read frame of strings (e.g. the bundled Parquet copy); nulls are empty fields."""
    raw = raw[COLUMNS].fillna("").reset_index(drop=True)
    return _reference(raw, pd.Series(False, index=raw.index), snapshot_date)


def _reference(raw: pd.DataFrame, malformed: pd.Series, snapshot_date: str | None) -> Reference:
    if snapshot_date is not None:
        snapshot_date = _check_date(snapshot_date)
    classified = classify(raw, malformed, snapshot_date)

    counts = classified["reject_reason"].value_counts()
    rejects = {reason: int(counts[reason]) for reason in REJECT_REASONS if counts.get(reason, 0) > 0}

    accepted = classified[classified["reject_reason"].isna()]
    if snapshot_date is None:
        if accepted.empty:
            raise ValueError("no accepted rows: cannot derive a snapshot date")
        snapshot = accepted["ts"].max().normalize() + pd.Timedelta(days=1)
    else:
        snapshot = pd.Timestamp(snapshot_date)

    return Reference(
        input_rows=len(raw),
        rejects=rejects,
        accepted_rows=len(accepted),
        snapshot_date=snapshot.date().isoformat(),
        customers=customer_features(accepted, snapshot),
    )
