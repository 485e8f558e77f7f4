"""The job's configuration as a typed model: every key, its type and its default, in one place.

`config.DEFAULTS` is this model's defaults, `config.load_config` merges a YAML file over them (an unknown key
is an error naming its full path), and `config.validate_config` checks the combinations (with messages that say
what to change) and then the types here (`check_types`). `conf/template.yaml` shows every key with a comment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from segmentation.errors import ConfigError

#: The bundled Online Retail files (the folder also holds the data's README with its licence).
BUNDLED_DATA = Path(__file__).resolve().parent / "data" / "online_retail"
BUNDLED_INPUT = str(BUNDLED_DATA / "part-*.parquet")

FileFormat = Literal["csv", "parquet", "orc", "json"]
#: `input.format`: files Spark reads natively, or a database table / query over JDBC (`input.jdbc`).
Format = Literal["csv", "parquet", "orc", "json", "jdbc"]
Method = Literal[
    "kmeans", "bisecting_kmeans", "gaussian_mixture", "dbscan", "hdbscan", "agglomerative", "som"
]
PathLike = str | Path


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CsvOptions(_Section):
    """`input.csv`: how a CSV file is written."""

    delimiter: str = ","
    encoding: str = "UTF-8"
    # "." or "," (a European file: 2,55; thousands separators "." are then allowed in groups of 3)
    decimal: Literal[".", ","] = "."
    # quoted fields may hold line breaks (each file is then read by one task)
    multiline: StrictBool = False


class Columns(_Section):
    """`input.columns`: the input's column for each role (null: not mapped)."""

    customer_id: str | None = "CustomerID"
    order_id: str | None = "InvoiceNo"
    timestamp: str | None = "InvoiceDate"
    quantity: str | None = "Quantity"
    unit_price: str | None = "UnitPrice"
    amount: str | None = None
    # the product of a line (recommendations, baskets); optional: absent from the input, recommendations are off
    product_id: str | None = "StockCode"
    product_name: str | None = "Description"


class JdbcConnection(_Section):
    """Where a database is and who logs in: `password_env` is the NAME of the environment variable holding the
    password (never the password); the driver's jar comes from `driver_jar` or the session's `spark.jars`."""

    url: str | None = None
    user: str | None = None
    password_env: str | None = None
    # the driver class; null: from the URL (jdbc:postgresql: -> org.postgresql.Driver, ...)
    driver: str | None = None
    driver_jar: str | None = None


class InputJdbc(JdbcConnection):
    """`input.jdbc`: a table or a query (one of them), read in parallel over ranges of `partition_column`."""

    table: str | None = None
    query: str | None = None
    partition_column: str | None = None
    lower_bound: str | int | float | None = None
    upper_bound: str | int | float | None = None
    num_partitions: int | None = Field(None, ge=1)
    fetch_size: int = Field(10000, ge=1)


class OutputJdbc(JdbcConnection):
    """`output.jdbc`: the database schema the published tables are copied into after each snapshot."""

    schema_: str = Field("segmentation", alias="schema")
    # rows per INSERT batch of Spark's JDBC writer
    batch_size: int = Field(10000, ge=1)


class Demographics(_Section):
    """`input.demographics`: a customer table beside the transactions, joined on the customer id."""

    path: PathLike | None = None
    format: FileFormat = "csv"
    customer_id: str | None = "CustomerID"
    features: list[str] = []
    categorical: list[str] = []


class InputSection(_Section):
    """`input`: what to read and how."""

    kind: Literal["transactions", "customers"] = "transactions"
    path: PathLike | None = BUNDLED_INPUT
    # a table of the session's catalog (`db.name`), read with spark.table instead of path
    table: str | None = None
    format: Format = "parquet"
    jdbc: InputJdbc = Field(default_factory=InputJdbc)
    # auto: the first of `timestamps.CANDIDATES` that parses most of a seeded sample (docs/pipeline.md,
    # "Input formats and timestamps"); or an explicit Spark pattern, `iso8601`, `epoch_seconds` / `_millis` /
    # `_micros` / `_nanos`
    timestamp_format: str = "auto"
    time_zone: str = "UTC"
    csv: CsvOptions = Field(default_factory=CsvOptions)
    columns: Columns = Field(default_factory=Columns)
    return_order_prefix: str | None = "C"
    # input.kind customers: numeric and categorical columns of the customer table (original names)
    features: list[str] = []
    categorical: list[str] = []
    # a missing feature value: reject the customer (reason missing_value) or impute it (Spark ML Imputer;
    # categoricals get a category of their own)
    missing: Literal["reject", "impute"] = "reject"
    impute_strategy: Literal["mean", "median", "mode"] = "mean"
    demographics: Demographics = Field(default_factory=Demographics)


class Cleaning(_Section):
    drop_duplicates: StrictBool = True
    returns: Literal["net", "gross"] = "net"


class Prepare(_Section):
    features: list[str] = ["recency_days", "frequency", "monetary"]
    log1p: list[str] = ["recency_days", "frequency", "monetary"]
    cap_quantiles: list[float] | None = [0.0, 0.995]


class Dbscan(_Section):
    """`model.dbscan`; null: eps from the knee of the k-distance curve, min_samples max(2 x dimensions, ln(sample))."""

    eps: float | None = Field(None, gt=0)
    min_samples: int | None = Field(None, ge=1)


class Hdbscan(_Section):
    """`model.hdbscan`; null: min_cluster_size max(10, sqrt(sample) / 2), min_samples max(5, ln(sample))."""

    min_cluster_size: int | None = Field(None, ge=2)
    min_samples: int | None = Field(None, ge=1)


class Agglomerative(_Section):
    """`model.agglomerative`: Ward's linkage by default; its memory grows with the square of the sample."""

    linkage: Literal["ward", "average", "complete", "single"] = "ward"
    fit_sample: int = Field(10_000, ge=100)


class Som(_Section):
    """`model.som`: a self-organizing map (MiniSom); grid null: a 1 x k map for each k of the sweep."""

    grid: tuple[int, int] | None = None
    sigma: float = Field(1.0, gt=0)
    learning_rate: float = Field(0.5, gt=0)
    iterations: int = Field(5_000, ge=1)


class ModelSection(_Section):
    """`model`: the clustering, the k range and the choice of k (docs/choosing-k.md)."""

    # kmeans, bisecting_kmeans (hierarchical) or gaussian_mixture (soft; membership probability) in Spark ML;
    # dbscan, hdbscan (density: they find k and mark noise), agglomerative (Ward) or som, fitted on a seeded
    # sample of at most fit_sample customers in the driver, every customer then assigned in Spark
    method: Method = "kmeans"
    # compare mode: other methods run on the same features, tabulated in the report and the manifest
    compare: list[Method] = []
    k: int | None = None
    k_min: int = 2
    k_max: int = 10
    seed: int = 42
    max_iter: int = 50
    tol: float = Field(1e-4, gt=0)
    # customers are laid out in this many partitions, sorted by id: KMeans results depend on the layout
    partitions: int = 2
    # fits of the other methods (bisecting_kmeans, gaussian_mixture) and their diagnostics run this many k at
    # once (KMeans fits every k together in shared passes)
    parallelism: int = 2
    # the sweep's Lloyd passes (all k at once) run in the driver on the collected features up to this many
    # customers (a few doubles each: 1M customers x 4 features = 32 MB), above it as one Spark job per pass;
    # 0: always Spark jobs. Same models either way.
    driver_sweep_max_rows: int = 1_000_000
    # null: the sweep fits every customer. N: above N customers the sweep runs on a seeded sample of about N
    # and the chosen k is refitted on all. Off by default: on data with a clear structure, KMeans beyond
    # the true k lands in different local optima on a sample (elbow costs up to 14% off; docs/choosing-k.md)
    sweep_sample: int | None = None
    # choice of k: vetoes and the structure check
    min_cluster_share: float = 0.02
    stability_fits: int = 2
    min_stability: float = 0.75
    min_silhouette: float = 0.5
    min_gap: float = 0.1
    # customers in a cluster below min_cluster_share that vetoes the chosen k: exclude (refit without
    # them, excluded_reason "outlier") or keep
    outliers: Literal["exclude", "keep"] = "exclude"
    fit_sample: int = Field(100_000, ge=100)
    dbscan: Dbscan = Field(default_factory=Dbscan)
    hdbscan: Hdbscan = Field(default_factory=Hdbscan)
    agglomerative: Agglomerative = Field(default_factory=Agglomerative)
    som: Som = Field(default_factory=Som)


class Output(_Section):
    path: PathLike | None = "output"
    # the HTML report and its figures under reports/ (off: tables, model and manifest only)
    report: StrictBool = True
    # a database the published tables are copied into (url null: none)
    jdbc: OutputJdbc = Field(default_factory=OutputJdbc)


class Naming(_Section):
    """Names in absolute terms too: a segment whose median customer last ordered more than `lapsed_days` ago
    is "Lost" (at most `lost_max_orders` orders) or "Lapsed", whatever the quartiles of the data."""

    lapsed_days: int = 365
    lost_max_orders: int = 1


class Identity(_Section):
    # stable segment ids: a new center within this distance (scaled space) of a previous one is the same segment
    max_distance: float = 1.0


class Catalog(_Section):
    """External tables over the output in a catalog: a persistent local Derby metastore (`mode: local`;
    `metastore` null: `<output.path>/_catalog` for a local output, else `metastore` in the working directory)
    or the session's own (`mode: session`)."""

    # local: a Derby metastore under the output (the default for a local master); session: the session's own
    # catalog (a cluster's Hive metastore or Glue; the default when the master is not local); off: none
    mode: Literal["local", "session", "off"] | None = None
    # alias: false is mode off
    enabled: StrictBool | None = None
    database: str = "segmentation"
    metastore: str | None = None


#: Online Retail's codes that are not products: postage, carriage, fees, discounts, manual lines, samples,
#: bad-debt adjustments and gift vouchers (shell-style patterns, case-sensitive).
NON_PRODUCT_CODES = [
    "POST", "DOT", "C2", "M", "m", "D", "S", "B", "CRUK", "PADS", "BANK CHARGES", "AMAZONFEE", "gift_0001_*",
]  # fmt: skip


class SegmentProducts(_Section):
    """`recommend.segment_products`: a segment's products ranked by lift (its share of buyers over everyone's)."""

    top: int = Field(20, ge=1)
    # a product needs this many buyers in the segment, and this share of it, to be listed (a lift from a
    # handful of buyers is noise)
    min_customers: int = Field(5, ge=1)
    min_support: float = Field(0.02, ge=0, le=1)


class Baskets(_Section):
    """`recommend.baskets`: FPGrowth per segment; an itemset needs min_baskets baskets, min_support of them and
    the baskets of the set's max_items-th most frequent product."""

    min_support: float = Field(0.001, gt=0, le=1)
    min_baskets: int = Field(20, ge=2)
    # at most this many products are frequent in a set: the support is at least the max_items-th one's
    max_items: int = Field(200, ge=2)
    # a set of more baskets is mined on a seeded sample of about this many (supports within a fraction of a %)
    max_baskets: int = Field(100_000, ge=100)
    min_confidence: float = Field(0.2, gt=0, le=1)
    # rules kept per segment, highest lift first
    max_rules: int = Field(50, ge=1)


class Als(_Section):
    """`recommend.als`: Spark ML ALS with implicit feedback on customer x product."""

    rank: int = Field(16, ge=1)
    max_iter: int = Field(10, ge=1)
    reg_param: float = Field(0.1, ge=0)
    alpha: float = Field(5.0, gt=0)
    # the strength of a customer-product pair: distinct orders with it, or log(1 + quantity bought)
    confidence: Literal["orders", "log_quantity"] = "orders"


class Evaluation(_Section):
    """`recommend.evaluation`: train before snapshot - test_days, test on what customers bought after."""

    enabled: StrictBool = True
    test_days: int = Field(90, ge=1)
    # a seeded sample of at most this many customers is evaluated (its own ALS fit): the cost stays bounded
    max_customers: int = Field(20_000, ge=100)


class Recommend(_Section):
    """`recommend`: segment products, basket rules and per-customer recommendations (docs/recommendations.md)."""

    # null: on when input.columns.product_id is mapped and the input has that column
    enabled: StrictBool | None = None
    top_n: int = Field(10, ge=1)
    exclude_products: list[str] = Field(default_factory=lambda: list(NON_PRODUCT_CODES))
    # a code in more than this share of the baskets is not a product choice (a bag, a fee): left out
    max_basket_share: float = Field(0.25, gt=0, le=1)
    segment_products: SegmentProducts = Field(default_factory=SegmentProducts)
    baskets: Baskets = Field(default_factory=Baskets)
    als: Als = Field(default_factory=Als)
    evaluation: Evaluation = Field(default_factory=Evaluation)


class JobConfig(_Section):
    """The whole configuration of a run."""

    input: InputSection = Field(default_factory=InputSection)
    cleaning: Cleaning = Field(default_factory=Cleaning)
    snapshot_date: str | None = None
    prepare: Prepare = Field(default_factory=Prepare)
    model: ModelSection = Field(default_factory=ModelSection)
    output: Output = Field(default_factory=Output)
    naming: Naming = Field(default_factory=Naming)
    identity: Identity = Field(default_factory=Identity)
    catalog: Catalog = Field(default_factory=Catalog)
    recommend: Recommend = Field(default_factory=Recommend)


def defaults() -> dict[str, Any]:
    """Every key with its default, as the nested mapping a YAML file overrides."""
    return JobConfig().model_dump(by_alias=True)


def check_types(cfg: dict[str, Any]) -> JobConfig:
    """The config as the typed model; a value of the wrong type is a ConfigError naming its full key."""
    try:
        return JobConfig.model_validate(cfg)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        raise ConfigError(f"config key '{key}': {error['msg'].lower()}, got {error['input']!r}") from None
