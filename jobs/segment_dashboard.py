"""Entry point of the dashboard: serve the Streamlit app over an output root, on 127.0.0.1 by default.

    segment-dashboard --output output            # http://127.0.0.1:8501
    segment-dashboard --output /data/segments --port 8600 --refresh-seconds 10

The app reads the published tables with DuckDB (segmentation/dashboard); nothing is sent anywhere (Streamlit's
usage statistics are off) and it binds to the loopback interface unless --host says otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from jobs.cli import int_at_least

APP = Path(__file__).resolve().parent.parent / "segmentation" / "dashboard" / "app.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="segment-dashboard", description="Serve the segments dashboard over a published output root."
    )
    parser.add_argument(
        "--output", required=True, help="output root of segment-customers (and stream-segments)"
    )
    parser.add_argument("--port", type=int_at_least(1), default=8501, help="port (default %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument(
        "--refresh-seconds", type=int_at_least(1), default=5, help="Live page refresh (default %(default)s)"
    )
    return parser.parse_args(argv)


def streamlit_command(args: argparse.Namespace) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.port",
        str(args.port),
        "--server.address",
        args.host,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--global.developmentMode",
        "false",
        "--client.toolbarMode",
        "viewer",
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(args.output).expanduser().resolve()
    if not root.is_dir():
        print(
            f"segment-dashboard: error: output not found: {root} (run segment-customers first)",
            file=sys.stderr,
        )
        return 2
    env = {
        **os.environ,
        "SEGMENT_DASHBOARD_OUTPUT": str(root),
        "SEGMENT_DASHBOARD_REFRESH_S": str(args.refresh_seconds),
    }
    print(f"Dashboard of {root}: http://{args.host}:{args.port}", flush=True)
    os.execve(
        sys.executable, streamlit_command(args), env
    )  # Streamlit takes over this process (and its signals)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
