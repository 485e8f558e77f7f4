"""The source stage: an input, as it comes -> one customer-feature table plus its reconciliation (`Source`).

`read` opens CSV, Parquet, ORC or JSON lines; `timestamps` detects and parses timestamp formats; `validate`
accepts or rejects every line of a transaction log with one reason; `transactions` and `customers` are the
two sources; `check` is the dry run (`segment-customers --check`) over a seeded sample.
"""
