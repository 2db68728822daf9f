"""The `rospr` commands, one module per subcommand: the only place that composes data with compute.

The step packages (`model`, `prompt`, `library`, `retrieval`, `eval`) take arrays and configs; the
data packages (`rospr_jax.data`, `rospr_tasks`) render and read examples. A command reads its flags or
gin config, loads the backbone (`rospr_jax.backbone.load_backbone`), feeds data to the steps and
writes the results. `tests/layout_test.py` holds the packages to these rules.
"""
