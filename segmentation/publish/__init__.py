"""The publish stage: the run's tables, model, report and manifest -> a snapshot readers can trust.

`tables` lays out each table in the data contract's columns and types, `snapshot` stages everything and
commits it atomically (manifest and success marker last), `history` reads earlier snapshots (stable ids,
transitions), `catalog` registers the published tables in a Hive metastore.
"""
