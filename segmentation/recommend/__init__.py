"""The recommend stage: what to offer each segment and each customer, from the products on the lines.

Takes the source's accepted lines per order and product (`Source.items_df`) and the segments stage's
`segments` table, and hands the report and the publish stage four tables: `segment_products` (a segment's
products by lift, `affinity`), `basket_rules` (FPGrowth per segment, `baskets`), `recommendations` (ALS with
implicit feedback, filled from the segment's popular products, `als`) and `recommendation_eval` (a time split
scored with Spark ML RankingEvaluator's metrics against popularity, `evaluation`). `products` decides what a
product is; `stage` runs them in order. docs/recommendations.md has the definitions.
"""
