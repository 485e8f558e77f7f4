"""The stream stage: a published model keeps every customer's segment current as transactions arrive.

`run` runs the Structured Streaming query (`run_stream`, the `stream-segments` job's one library call) and hands
each micro-batch to `version`, which computes one state version from the one before with the batch job's own
validation, feature and scoring code. docs/streaming.md has the state, its tables and its guarantees.
"""
