"""The project's gin files (installed as the package `rospr_jax_gin` so `--gin_file=eval/base.gin` resolves)."""
