"""The warehouse connection over JDBC, shared by the reader (`sources/read.py`) and the publisher
(`publish/warehouse.py`): the password from the environment, the driver jar, and one line for what goes wrong.

A config names the environment variable that holds the password (`password_env`), never the password: it is
read here, handed to Spark's JDBC source or to the driver as a property, and never logged, put in a manifest or
on a command line. The driver's jar reaches the session through `spark.jars` (`session_jars`) at its start.
"""

from __future__ import annotations

import os
import re
from typing import Any

from pyspark.sql import SparkSession

from segmentation.errors import ConfigError, InputError, SegmentationError, root_cause

#: Driver classes by JDBC sub-protocol (`jdbc:<name>:`), when `driver` is not configured.
DRIVERS = {
    "postgresql": "org.postgresql.Driver",
    "mysql": "com.mysql.cj.jdbc.Driver",
    "mariadb": "org.mariadb.jdbc.Driver",
    "sqlserver": "com.microsoft.sqlserver.jdbc.SQLServerDriver",
    "oracle": "oracle.jdbc.OracleDriver",
    "redshift": "com.amazon.redshift.jdbc42.Driver",
    "snowflake": "net.snowflake.client.jdbc.SnowflakeDriver",
}

#: Where a user finds each driver's jar, for the message when it is missing.
JARS = {
    "postgresql": "postgresql-<version>.jar (Debian: libpostgresql-jdbc-java, /usr/share/java/postgresql.jar)",
    "mysql": "mysql-connector-j-<version>.jar",
    "mariadb": "mariadb-java-client-<version>.jar",
    "sqlserver": "mssql-jdbc-<version>.jar",
    "oracle": "ojdbc11.jar",
}


def protocol(url: str) -> str:
    match = re.match(r"jdbc:([a-z0-9]+):", url or "")
    return match.group(1) if match else ""


def driver_class(cfg: dict[str, Any]) -> str | None:
    return cfg.get("driver") or DRIVERS.get(protocol(cfg["url"]))


def validate(cfg: dict[str, Any], where: str) -> None:
    """The connection keys of `where` (`input.jdbc` / `output.jdbc`): a JDBC URL without a password in it."""
    url = cfg.get("url")
    if not isinstance(url, str) or not url.startswith("jdbc:"):
        raise ConfigError(f"{where}.url must be a JDBC URL (jdbc:postgresql://host:5432/db), got {url!r}")
    if re.search(r"(?i)password=", url):
        raise ConfigError(
            f"{where}.url holds a password: take it out and put the password in an environment variable "
            f"named by {where}.password_env"
        )
    env = cfg.get("password_env")
    if env is not None and (not isinstance(env, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env)):
        raise ConfigError(f"{where}.password_env must be the NAME of an environment variable, got {env!r}")
    if cfg.get("driver_jar") and not isinstance(cfg["driver_jar"], str):
        raise ConfigError(f"{where}.driver_jar must be a path to the driver's jar")


def password(cfg: dict[str, Any], where: str) -> str | None:
    """The password from the environment variable `password_env` names (None: no password configured)."""
    env = cfg.get("password_env")
    if not env:
        return None
    if env not in os.environ:
        raise ConfigError(f"{where}.password_env names {env}, which is not set in the environment")
    return os.environ[env]


def properties(cfg: dict[str, Any], where: str) -> dict[str, str]:
    """Spark JDBC options for the connection: user, password, driver class."""
    props = {}
    if cfg.get("user"):
        props["user"] = str(cfg["user"])
    secret = password(cfg, where)
    if secret is not None:
        props["password"] = secret
    driver = driver_class(cfg)
    if driver:
        props["driver"] = driver
    return props


def session_jars(cfg: dict[str, Any], existing: str = "") -> dict[str, str]:
    """`spark.jars` for the session: the configured driver jars added to those it already has (`--jars`)."""
    jars = [j for j in existing.split(",") if j]
    for section in (cfg["input"].get("jdbc") or {}, cfg["output"].get("jdbc") or {}):
        jar = section.get("driver_jar")
        if jar and jar not in jars:
            if "://" not in jar and not os.path.isfile(os.path.expanduser(jar)):
                raise ConfigError(f"JDBC driver jar not found: {jar}")
            jars.append(jar)
    return {"spark.jars": ",".join(jars)} if jars else {}


def describe(cfg: dict[str, Any]) -> str:
    """Where the connection points, for logs and manifests: URL (without its parameters) and user, no secret."""
    url = cfg["url"].split("?", 1)[0]
    return f"{url} as {cfg['user']}" if cfg.get("user") else url


def connection_error(
    exc: BaseException, cfg: dict[str, Any], where: str, error: type[SegmentationError] = InputError
) -> SegmentationError:
    """One line a user can act on: a missing driver (which jar to add), a refused login, an unreachable server."""
    cause = root_cause(exc)
    name = protocol(cfg["url"])
    if "No suitable driver" in cause or "ClassNotFoundException" in cause:
        jar = JARS.get(name, "the database's JDBC driver jar")
        return error(
            f"no JDBC driver for {name or cfg['url']} in the session: add {jar} with {where}.driver_jar "
            "or spark-submit --jars"
        )
    if re.search(r"(?i)password authentication failed|access denied|login failed", cause):
        return error(
            f"{describe(cfg)}: the database refused the login (check the user and {where}.password_env)"
        )
    return error(f"{where} {describe(cfg)}: {cause}")


def connect(
    spark: SparkSession, cfg: dict[str, Any], where: str, error: type[SegmentationError] = InputError
):
    """A java.sql.Connection through the driver class in the session's class loader (the jars of `spark.jars`
    are not visible to DriverManager from the Python gateway's thread), auto-commit off."""
    if not driver_class(cfg):
        raise ConfigError(f"{where}.driver: name the JDBC driver class for {cfg['url']!r}")
    jvm = spark.sparkContext._jvm
    props = jvm.java.util.Properties()
    for key, value in properties(cfg, where).items():
        if key != "driver":
            props.setProperty(key, value)
    try:
        loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
        driver = jvm.java.lang.Class.forName(driver_class(cfg), True, loader).newInstance()
        conn = driver.connect(cfg["url"], props)
        if conn is None:
            raise error(f"{where}.url {cfg['url']!r} is not a URL the driver {driver_class(cfg)} accepts")
        conn.setAutoCommit(False)
        return conn
    except SegmentationError:
        raise
    except Exception as exc:  # noqa: BLE001 - a connection that fails: one line
        raise connection_error(exc, cfg, where, error) from exc
