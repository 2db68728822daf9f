"""rospr_tasks: the SeqIO tasks and mixtures of rospr-jax (import this module in a gin file).

Importing the package registers every source and target task whose inputs are cached (see
`rospr_tasks.registry`); `rospr fetch` fills the cache once. Nothing is downloaded here.
"""

from rospr_tasks import registry

registry.register_all()
