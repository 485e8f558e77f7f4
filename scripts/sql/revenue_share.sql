-- Revenue (sum of monetary) and its share per segment and snapshot, over the clustered customers.
SELECT
    snapshot_date,
    segment_id,
    segment_name,
    round(sum(monetary), 2) AS revenue,
    round(sum(monetary) / sum(sum(monetary)) OVER (PARTITION BY snapshot_date), 4) AS share_revenue
FROM published('segments')
WHERE segment_id IS NOT NULL
GROUP BY snapshot_date, segment_id, segment_name
ORDER BY snapshot_date, segment_id;
