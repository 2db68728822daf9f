"""Data helpers that need neither the model nor TensorFlow.

- `archives`: the promptsource and BIG-bench source archives, fetched once into a cache (`rospr fetch`).
- `templates`: promptsource templates read from YAML and rendered as promptsource's `Template.apply` does.
- `bigbench`: BIG-bench JSON tasks read from the cache, formatted as BIG-bench's own JSON task API does.
- `records`: dataset examples from local files (JSON lines, Hugging Face on-disk arrow) with clear errors.
- `catalog`: which datasets are T0's sources and held-out targets, and how T0 capped its mixture.
- `rank_classification`: one row per answer choice, grouping of scores, accuracy, aggregation.
- `vocabulary`: the SentencePiece vocabulary path (T0's, or a small one trained offline).
"""
