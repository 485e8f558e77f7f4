-- Customers who were Champions in a published snapshot and are At risk in the next published one.
WITH history AS (
    SELECT
        customer_id,
        snapshot_date,
        segment_name,
        lag(segment_name) OVER (PARTITION BY customer_id ORDER BY snapshot_date) AS previous_segment,
        lag(snapshot_date) OVER (PARTITION BY customer_id ORDER BY snapshot_date) AS previous_snapshot_date,
        monetary
    FROM published('segments')
)
SELECT snapshot_date, previous_snapshot_date, customer_id, monetary
FROM history
WHERE previous_segment = 'Champions' AND segment_name = 'At risk'
ORDER BY snapshot_date, customer_id;
