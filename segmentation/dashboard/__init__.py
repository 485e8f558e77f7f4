"""The dashboard: the published tables as pages marketers open every morning (Streamlit over DuckDB).

`data` reads the output root (published snapshots only, DuckDB over Parquet); `app` is the Streamlit script that
`segment-dashboard` serves.
"""
