"""spark-submit entry points (thin: parse arguments, load config, build the session, call the library)."""
