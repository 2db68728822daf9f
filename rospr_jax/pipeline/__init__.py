"""Steps composed over several compute packages: the evaluation of targets (`evaluate.py`), which
retrieves from a library (`rospr_jax.retrieval`, handing VAR the scorer's predictions) and scores with
the backbone (`rospr_jax.eval`). It sits above both so that neither imports the other."""
