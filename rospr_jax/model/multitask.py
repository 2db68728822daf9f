"""Multi-task training of a small T0-like backbone (all weights) on hard-prompted source examples.

T0 itself is T5 fine-tuned on the prompted P3 mixture; the offline demo has no T0 weights, so it
makes a tiny stand-in the same way from the offline sources. The loss is T0's: cross-entropy of the
targets (with EOS) given the inputs (without EOS), averaged over real target tokens.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rospr_jax.model.interface import PromptedBackbone


def target_loss(params, model: PromptedBackbone, inputs, targets, dropout_rng=None):
  """Mean negative log-likelihood per real target token: [B, T] inputs, [B, L] targets -> scalar."""
  log_likelihoods = model.token_log_likelihoods(params, inputs, targets, dropout_rng=dropout_rng)  # [B, L]
  real = (targets > 0).astype(jnp.float32)
  return -jnp.sum(log_likelihoods * real) / jnp.maximum(jnp.sum(real), 1.0)


def train_backbone(model: PromptedBackbone, batches: Iterator[dict[str, np.ndarray]], *, steps: int,
                   learning_rate: float = 3e-3, warmup_steps: int = 100, seed: int = 0,
                   log_every: int = 100) -> tuple[dict, list[float]]:
  """Trains every weight of a freshly initialized `model` (its `init_params`) with AdamW.

  Args:
    batches: yields {"inputs": [B, T], "targets": [B, L]} int32 numpy batches.
    steps: optimizer steps.

  Returns:
    (params, losses): the trained parameters and the loss of every step.
  """
  params = model.init_params(jax.random.PRNGKey(seed))
  schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps, max(steps, warmup_steps + 1),
                                                end_value=learning_rate * 0.1)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=0.01))
  opt_state = optimizer.init(params)
  use_dropout = model.config.dropout_rate > 0

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, opt_state, inputs, targets, rng):
    loss, grads = jax.value_and_grad(target_loss)(params, model, inputs, targets,
                                                  rng if use_dropout else None)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  losses = []
  rng = jax.random.PRNGKey(seed + 1)
  start = time.perf_counter()
  for i in range(steps):
    batch = next(batches)
    rng, step_rng = jax.random.split(rng)
    params, opt_state, loss = step(params, opt_state, jnp.asarray(batch["inputs"]),
                                   jnp.asarray(batch["targets"]), step_rng)
    losses.append(float(loss))
    if not np.isfinite(losses[-1]):
      raise FloatingPointError(f"Backbone training loss became {losses[-1]} at step {i}.")
    if log_every and ((i + 1) % log_every == 0 or i + 1 == steps):
      logging.info("backbone step %d/%d: loss %.4f (%.1f steps/s)", i + 1, steps,
                   float(np.mean(losses[-log_every:])), (i + 1) / (time.perf_counter() - start))
  return params, losses
