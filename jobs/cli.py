"""What every entry point shares: argument types, the config from a file plus options, and one error path.

An entry point parses its arguments, then hands `run_job` a function of a `Sessions` that builds the Spark
session it needs, calls one library function and prints its summary. `run_job` turns a user's mistake
(`SegmentationError`) into one line and exit 2, anything else into its root cause and exit 1 (the trace with
--verbose), and always stops the session.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from segmentation.config import apply_overrides, load_config, validate_config
from segmentation.errors import SegmentationError, root_cause

log = logging.getLogger("jobs")


def date_arg(value: str) -> str:
    """An argparse type: a YYYY-MM-DD date, normalised."""
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {value!r}") from exc


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `minimum`."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from exc
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {number}")
        return number

    return parse


def config_from(config_path: str | None, **overrides: Any) -> dict[str, Any]:
    """The validated config: the YAML file (or the defaults) with the command-line options on top."""
    return validate_config(apply_overrides(load_config(config_path), **overrides))


def input_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The options every entry point shares: --input, --input-format and --output."""
    return {"input": args.input, "input_format": args.input_format, "output": args.output}


def session_conf(cfg: dict[str, Any]) -> dict[str, str]:
    """Settings the config asks of the session at its start: the JDBC driver jars (`spark.jars`)."""
    from jobs.spark_session import submitted_jars
    from segmentation.jdbc import session_jars

    return session_jars(cfg, submitted_jars())


class Sessions:
    """Builds the Spark session an entry point needs and stops it when the job ends."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.spark = None

    def start(self, app_name: str, conf: dict[str, str] | None = None):
        from jobs.spark_session import build_spark

        started = time.perf_counter()
        self.spark = build_spark(app_name, verbose=self.verbose, conf=conf)
        # a fixed cost of every run (the JVM's start with it when this process launched it): the benchmark reads it
        log.info(
            "spark session: started in %.1f s (%s)",
            time.perf_counter() - started,
            self.spark.sparkContext.master,
        )
        return self.spark

    def stop(self) -> None:
        if self.spark is not None:
            started = time.perf_counter()
            self.spark.stop()
            self.spark = None
            log.info("spark session: stopped in %.1f s", time.perf_counter() - started)

    def stop_before_message(self) -> None:
        """Stop now, so that a failed job's one line is the last thing it prints (the stop logs a line); a
        session that fails to stop is left to the final `stop`."""
        with contextlib.suppress(Exception):
            self.stop()


def run_job(prog: str, verbose: bool, job: Callable[[Sessions], int]) -> int:
    """Run `job` with logging configured; its exit code, or 2 for a user's mistake and 1 for anything else."""
    from jobs.spark_session import configure_logging

    configure_logging(verbose)
    sessions = Sessions(verbose)
    try:
        return job(sessions)
    except SegmentationError as exc:
        sessions.stop_before_message()
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - one clear line; the trace with --verbose
        if verbose:
            log.exception("unexpected failure")
        sessions.stop_before_message()
        print(
            f"{prog}: unexpected error: {root_cause(exc)} (rerun with --verbose for details)", file=sys.stderr
        )
        return 1
    finally:
        sessions.stop()
