"""The features stage: a validated ledger of orders -> one row of features per customer.

`rfm` computes recency, frequency, monetary value, tenure and the BTYD summary per customer (and the reasons
a customer is not clustered); `scores` adds the classic 1-5 R, F and M scores and RFM segments.
"""
