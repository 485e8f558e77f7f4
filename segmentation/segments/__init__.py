"""The segments stage: clusters -> segments with stable ids, names and profiles.

`order` maps clusters to segment ids and adds each customer's distance, `identity` keeps a segment's id and
name across snapshots and counts the moves between them, `naming` names a segment from its profile,
`profiles` measures each segment.
"""
