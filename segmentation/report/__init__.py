"""The report stage: a run's segments -> `report.html` and its figures, for the people who act on them.

`data` reduces the customers in Spark to small aggregates and a bounded, seeded sample; `figures` and
`distributions` draw them with matplotlib; `html` renders the page from the Jinja2 templates in `templates/`
(autoescaped, every figure embedded, no scripts); `formatting` holds the number formats both use.
"""
