"""The marketers' dashboard (Streamlit): every snapshot, the moves between segments, the customers to contact.

Run by `segment-dashboard --output ROOT` (which sets `SEGMENT_DASHBOARD_OUTPUT` and serves this script on
127.0.0.1). Reads only through `dashboard.data.Output` (DuckDB over the published Parquet). The page and every
filter live in the URL's query parameters, so a view can be shared; a missing table gives a line saying which
job produces it, never a stack trace.
"""

from __future__ import annotations

import os

import plotly.graph_objects as go
import streamlit as st

from segmentation.dashboard.data import Campaign, MissingTable, Output, flow_sentences

#: Seconds between refreshes of the Live page.
LIVE_REFRESH_S = int(os.environ.get("SEGMENT_DASHBOARD_REFRESH_S", "5"))


def _param(name: str, default: str) -> str:
    return st.query_params.get(name, default)


def _choose(label: str, options: list, key: str, default=None, format_func=str):
    """A selectbox whose value is kept in the URL (query parameter `key`)."""
    wanted = _param(key, str(default if default is not None else options[0]))
    index = next((i for i, o in enumerate(options) if str(o) == wanted), 0)
    value = st.sidebar.selectbox(label, options, index=index, format_func=format_func, key=f"w_{key}")
    st.query_params[key] = str(value)
    return value


def overview(out: Output, snapshot: str) -> None:
    manifest = out.manifest(snapshot)
    profiles = out.profiles(snapshot)
    st.header(f"Segments of snapshot {snapshot}")
    st.caption(f"k = {manifest['chosen_k']}: {manifest['chosen_k_reason']}")
    cols = st.columns(3)
    cols[0].metric("Customers", f"{manifest['customers']:,}")
    cols[1].metric("Clustered", f"{manifest['clustered_customers']:,}")
    cols[2].metric("Rejected rows", f"{sum(manifest['rejected_rows'].values()):,}")
    shown = [
        c
        for c in (
            "segment_id",
            "segment_name",
            "customers",
            "share_customers",
            "share_revenue",
            "median_recency_days",
            "median_frequency",
            "median_monetary",
            "action",
        )
        if c in profiles.columns
    ]
    st.dataframe(profiles[shown], hide_index=True, key="overview_table")
    if manifest["rejected_rows"]:
        st.subheader("Rejected input rows")
        st.table(
            {"reason": list(manifest["rejected_rows"]), "rows": list(manifest["rejected_rows"].values())}
        )


def trends(out: Output, snapshot: str) -> None:
    frame = out.trends()
    st.header("Segments over time")
    frame["segment"] = frame["segment_id"].astype(str) + " " + frame["segment_name"]
    st.subheader("Customers per segment")
    st.line_chart(frame.pivot(index="snapshot_date", columns="segment", values="customers"))
    if frame["revenue"].notna().any():
        st.subheader("Revenue per segment")
        st.line_chart(frame.pivot(index="snapshot_date", columns="segment", values="revenue"))
    st.dataframe(frame.drop(columns="segment"), hide_index=True, key="trends_table")


def movement(out: Output, snapshot: str) -> None:
    moves = out.transitions(snapshot)
    previous = moves["previous_snapshot_date"].dropna()
    since = f" since {previous.iloc[0]}" if len(previous) else " (the first snapshot: everyone is new)"
    st.header(f"Who moved{since}")
    sources = [f"before: {s}" for s in moves["from_segment"]]
    targets = [f"now: {t}" for t in moves["to_segment"]]
    labels = list(dict.fromkeys(sources + targets))
    figure = go.Figure(
        go.Sankey(
            node={"label": labels, "pad": 12},
            link={
                "source": [labels.index(s) for s in sources],
                "target": [labels.index(t) for t in targets],
                "value": list(moves["customers"]),
            },
        )
    )
    figure.update_layout(height=480, margin={"l": 10, "r": 10, "t": 10, "b": 10})
    st.plotly_chart(figure, key="sankey")
    st.subheader("Largest moves")
    for sentence in flow_sentences(moves):
        st.markdown(f"- {sentence}")
    st.dataframe(moves, hide_index=True, key="movement_table")


def segment(out: Output, snapshot: str) -> None:
    profiles = out.profiles(snapshot)
    ids = list(profiles["segment_id"])
    names = dict(zip(profiles["segment_id"], profiles["segment_name"]))
    chosen = _choose("Segment", ids, "segment", format_func=lambda s: f"{s} {names[s]}")
    row = profiles[profiles["segment_id"] == chosen].iloc[0]
    st.header(f"Segment {chosen}: {row['segment_name']}")
    if "action" in profiles.columns:
        st.markdown(f"**What to do:** {row['action']}")
    st.markdown(str(row["description"]))
    st.dataframe(
        row.drop(labels=["run_id"], errors="ignore").astype(str).to_frame("value"), key="segment_profile"
    )
    st.subheader("RFM segments of its customers")
    st.dataframe(out.rfm_crosstab(snapshot, int(chosen)), hide_index=True, key="segment_rfm")
    for table, title, rows in (
        ("segment_products", "Top products (by lift)", out.segment_products),
        ("basket_rules", "Strongest basket rules", out.basket_rules),
    ):
        st.subheader(title)
        if not out.has(table):
            st.info(str(MissingTable(out.root, table)))
            continue
        found = rows(snapshot, int(chosen))
        if found.empty:
            st.info(f"None for segment {chosen} in snapshot {snapshot}.")
        else:
            st.dataframe(found, hide_index=True, key=table)


def customer(out: Output, snapshot: str) -> None:
    st.header("Customer lookup")
    wanted = st.text_input("Customer id", value=_param("customer", ""), key="w_customer")
    st.query_params["customer"] = wanted
    if not wanted:
        st.info("Type a customer id to see its segment in every snapshot.")
        return
    history = out.customer(wanted.strip())
    if history.empty:
        st.warning(f"No customer {wanted!r} in the published snapshots.")
        return
    st.dataframe(history, hide_index=True, key="customer_history")


def campaign(out: Output, snapshot: str) -> None:
    profiles = out.profiles(snapshot)
    names = dict(zip(profiles["segment_id"], profiles["segment_name"]))
    st.header(f"Campaign export, snapshot {snapshot}")
    wanted = [int(s) for s in _param("segments", "").split(",") if s.strip().isdigit() and int(s) in names]
    segments = st.multiselect(
        "Segments", list(names), default=wanted, format_func=lambda s: f"{s} {names[s]}", key="w_segments"
    )
    st.query_params["segments"] = ",".join(map(str, segments))
    rfm_options = out.rfm_segments(snapshot)
    rfm_wanted = [r for r in _param("rfm", "").split(",") if r in rfm_options]
    rfm = st.multiselect("RFM segments", rfm_options, default=rfm_wanted, key="w_rfm")
    st.query_params["rfm"] = ",".join(rfm)
    bounds = out.ranges(snapshot)
    recency = _range("Recency (days)", "recency", bounds["recency_days"])
    monetary = _range("Monetary", "monetary", bounds["monetary"])
    chosen = Campaign(segments, rfm, recency, monetary)
    size = out.campaign_size(snapshot, chosen)
    st.metric("Customers in the campaign", f"{size:,}")
    st.dataframe(out.campaign(snapshot, chosen, limit=200), hide_index=True, key="campaign_table")
    st.download_button(
        "Download the customer list (CSV)",
        out.campaign(snapshot, chosen).to_csv(index=False).encode("utf-8"),
        file_name=f"campaign-{snapshot}.csv",
        mime="text/csv",
        key="campaign_csv",
    )


def _range(label: str, key: str, bounds: tuple[float, float]) -> tuple[float, float]:
    low, high = bounds
    given = _param(key, "")
    try:
        start, end = (float(v) for v in given.split(":")) if given else (low, high)
    except ValueError:
        start, end = low, high
    value = st.slider(
        label, min_value=low, max_value=high, value=(max(low, start), min(high, end)), key=f"w_{key}"
    )
    st.query_params[key] = f"{value[0]:g}:{value[1]:g}"
    return value


def live(out: Output, snapshot: str) -> None:
    st.header("Live segment changes")

    @st.fragment(run_every=LIVE_REFRESH_S)
    def latest() -> None:
        try:
            st.dataframe(out.latest_updates(), hide_index=True, key="live_table")
        except MissingTable as missing:
            st.info(str(missing))

    latest()


#: Page (its `?page=` value) -> title and the function that draws it for a snapshot.
PAGES = {
    "overview": ("Overview", overview),
    "trends": ("Trends", trends),
    "movement": ("Movement", movement),
    "segment": ("Segment detail", segment),
    "customer": ("Customer lookup", customer),
    "campaign": ("Campaign export", campaign),
    "live": ("Live", live),
}


def main() -> None:
    st.set_page_config(page_title="Customer segments", layout="wide")
    root = os.environ.get("SEGMENT_DASHBOARD_OUTPUT", "output")
    out = Output(root)
    page = _choose("Page", list(PAGES), "page", format_func=lambda name: PAGES[name][0])
    snapshots = out.snapshots()
    if not snapshots:
        st.warning(
            f"No published snapshot under {out.root}: run segment-customers --output {root} first "
            "(a snapshot is published when its manifests/snapshot_date=D/_SUCCESS marker exists)."
        )
        return
    snapshot = _choose("Snapshot", snapshots[::-1], "snapshot")
    try:
        PAGES[page][1](out, snapshot)
    except MissingTable as missing:
        st.info(str(missing))


main()
