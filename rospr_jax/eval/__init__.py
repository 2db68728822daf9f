"""Zero-shot rank-classification scoring: the encode-once scorer, batching, the metric, VAR's
predictions (a callable the caller hands to retrieval), targets and their records, and reports. The
evaluation of targets, which also retrieves, is `rospr_jax.pipeline.evaluate`."""
