-- Top 3 customers by monetary value in each segment of the latest published snapshot (ties: smaller id first).
SELECT snapshot_date, segment_id, segment_name, rank, customer_id, monetary
FROM (
    SELECT
        *,
        row_number() OVER (PARTITION BY segment_id ORDER BY monetary DESC, customer_id) AS rank
    FROM published('segments')
    WHERE segment_id IS NOT NULL
      AND snapshot_date = (SELECT max(snapshot_date) FROM published_snapshots())
)
WHERE rank <= 3
ORDER BY segment_id, rank;
