-- Segment sizes over time: customers and share of the clustered customers per segment and snapshot.
SELECT
    snapshot_date,
    segment_id,
    segment_name,
    count(*) AS customers,
    round(count(*) / sum(count(*)) OVER (PARTITION BY snapshot_date), 4) AS share_customers
FROM published('segments')
WHERE segment_id IS NOT NULL
GROUP BY snapshot_date, segment_id, segment_name
ORDER BY snapshot_date, segment_id;
