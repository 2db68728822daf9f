"""The prompt-only training step: S soft prompts updated in one compiled step, backbone frozen.

A batch mixes examples of several sources; example b uses the prompt of `source_ids[b]`. The step

1. finds the K = min(S, B) distinct sources present in the batch (sorted; unused slots hold S),
2. gathers their prompts [K, P, H] and optimizer states (leaves [K, ...]) from the table,
3. differentiates the loss with respect to those K prompts only (the backbone parameters are plain
   inputs of the step: no weight gradient is computed and they hold no optimizer state),
4. applies `jax.vmap(optimizer.update)` over the K prompts, so each prompt has its own optimizer state,
5. writes the K prompts and states back (slots holding S are dropped): prompts absent from the batch
   and their optimizer states (moments and step counts) do not change at all.

Loss (T0's): inputs without EOS, targets with EOS, token cross-entropy over the real (non-zero) target
tokens. Normalization: for each source present, the mean over its real target tokens in the batch;
the step minimizes the *sum* of these per-source means. The gradient with respect to prompt s is then
exactly the gradient of source s's own mean token loss, so training S prompts jointly equals training
each alone on its share of every batch. Rows without any target token are padding.

Vocabulary: B batch, T input length, L target length, P prompt length, H model dim, S sources,
K distinct sources in a batch, V vocabulary.

Beside the step, the memory it needs at the least (`step_memory_lower_bound`), from the shapes alone:
`check_step_fits` refuses a run whose step cannot fit before anything is allocated.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rospr_jax.model import PromptedBackbone
from rospr_jax.model import partitioning
from rospr_jax.prompt import optimizers

Array = jax.Array
Batch = dict[str, Array]  # inputs [B, T] int32, targets [B, L] int32, source_ids [B] int32


@flax.struct.dataclass
class PromptTrainState:
  """Everything that changes during prompt tuning (the backbone is not part of it).

  Attributes:
    step: [] int32 steps taken.
    prompts: [S, P, H] float32 prompt table.
    opt_state: the optimizer state of every prompt; each leaf has a leading S axis.
    source_steps: [S] int32 updates each prompt received (steps in which its source was present).
  """
  step: Array
  prompts: Array
  opt_state: Any
  source_steps: Array

  @property
  def num_sources(self) -> int:
    return self.prompts.shape[0]


def default_optimizer(learning_rate: float = 0.3) -> optax.GradientTransformation:
  """Lester et al.'s prompt-tuning optimizer: Adafactor, constant LR 0.3, weight decay 1e-5, beta2
  decay 0.8, parameter scaling off (optax's defaults otherwise: update clipping 1.0, no momentum);
  `optimizers.Adafactor`'s transformation, cached, so that runs in one process share the compiled step."""
  return optimizers.Adafactor(learning_rate=learning_rate).build()


def init_state(prompts, optimizer: optax.GradientTransformation) -> PromptTrainState:
  """A fresh state for a [S, P, H] prompt table: one optimizer state per prompt."""
  prompts = jnp.asarray(prompts, jnp.float32)
  if prompts.ndim != 3:
    raise ValueError(f"The prompt table must be [S, P, H]; got shape {prompts.shape}.")
  return PromptTrainState(step=jnp.zeros((), jnp.int32), prompts=prompts,
                          opt_state=jax.vmap(optimizer.init)(prompts),
                          source_steps=jnp.zeros(prompts.shape[:1], jnp.int32))


def present_sources(source_ids: Array, real_rows: Array, num_sources: int) -> tuple[Array, Array]:
  """Distinct sources of the real rows of a batch and each row's slot among them.

  Args:
    source_ids: [B] int32; real_rows: [B] bool.

  Returns:
    present [K] int32 sorted source ids (K = min(S, B); unused slots hold S) and slots [B] int32 (the
    index of each row's source in `present`; arbitrary for padding rows).
  """
  batch = source_ids.shape[0]
  masked = jnp.where(real_rows, source_ids, num_sources)
  present = jnp.unique(masked, size=min(num_sources, batch), fill_value=num_sources)
  slots = jnp.clip(jnp.searchsorted(present, masked), 0, present.shape[0] - 1)
  return present.astype(jnp.int32), slots.astype(jnp.int32)


def per_source_losses(log_likelihoods: Array, targets: Array, slots: Array,
                      num_slots: int) -> tuple[Array, Array]:
  """Summed token cross-entropy and real-token counts per slot.

  Args:
    log_likelihoods: [B, L] float32 log p of each target token; targets: [B, L] int32 (0 = padding);
    slots: [B] int32.

  Returns:
    loss_sums [K] float32 and token_counts [K] float32.
  """
  weights = (targets > 0).astype(jnp.float32)                              # [B, L]
  token_loss = -log_likelihoods * weights                                  # [B, L]
  loss_sums = jax.ops.segment_sum(token_loss.sum(-1), slots, num_slots)    # [K]
  token_counts = jax.ops.segment_sum(weights.sum(-1), slots, num_slots)    # [K]
  return loss_sums, token_counts


def loss_fn(prompts: Array, params, batch: Batch, slots: Array, *, model: PromptedBackbone,
            dropout_rng: Array | None) -> tuple[Array, tuple[Array, Array]]:
  """Sum over present sources of their mean token loss.

  Args:
    prompts: [K, P, H] prompts of the sources present; params: frozen backbone parameters.
    model: the backbone (`PromptedBackbone`) that computes the token log-likelihoods.
    batch: inputs [B, T], targets [B, L]; slots: [B] row -> prompt slot.

  Returns:
    (scalar loss, (loss_sums [K], token_counts [K])).
  """
  example_prompts = prompts[slots]  # [B, P, H]
  targets = batch["targets"]
  log_likelihoods = model.token_log_likelihoods(
      params, batch["inputs"], targets, example_prompts, dropout_rng=dropout_rng)  # [B, L]
  loss_sums, token_counts = per_source_losses(log_likelihoods, targets, slots, prompts.shape[0])
  loss = jnp.sum(loss_sums / jnp.maximum(token_counts, 1.0))
  return loss, (loss_sums, token_counts)


def _take(tree, index: Array):
  return jax.tree.map(lambda x: jnp.take(x, index, axis=0, mode="clip"), tree)


def _put(tree, index: Array, values):
  return jax.tree.map(lambda x, v: x.at[index].set(v.astype(x.dtype), mode="drop"), tree, values)


def train_step(state: PromptTrainState, params, batch: Batch, rng: Array, *, model: PromptedBackbone,
               optimizer: optax.GradientTransformation) -> tuple[PromptTrainState, dict[str, Array]]:
  """One update of every prompt whose source is present in `batch` (see the module docstring).

  Args:
    state: the prompt table and optimizer states.
    params: frozen backbone parameters (in the compute dtype); never differentiated.
    batch: inputs [B, T] int32 without EOS, targets [B, L] int32 with EOS, source_ids [B] int32.
    rng: the run's dropout key (used when `model.config.dropout_rate > 0`); step `state.step` uses
      `fold_in(rng, state.step)`, so a resumed run draws the masks an uninterrupted one would.

  Returns:
    (new state, metrics): `loss` (mean over present sources of their mean token loss), `loss_sum`
    (the minimized sum), `num_sources` present, `target_tokens` and `finite` (all of loss and update).
  """
  num_sources = state.num_sources
  real_rows = jnp.any(batch["targets"] > 0, axis=-1)  # [B]
  present, slots = present_sources(batch["source_ids"], real_rows, num_sources)
  prompts = state.prompts[jnp.clip(present, 0, num_sources - 1)]  # [K, P, H]
  opt_state = _take(state.opt_state, present)
  dropout_rng = jax.random.fold_in(rng, state.step) if model.config.dropout_rate > 0 else None
  (loss, (loss_sums, counts)), grads = jax.value_and_grad(
      functools.partial(loss_fn, model=model, dropout_rng=dropout_rng), has_aux=True)(
          prompts, params, batch, slots)
  updates, opt_state = jax.vmap(optimizer.update)(grads, opt_state, prompts)
  new_prompts = optax.apply_updates(prompts, updates)
  is_present = counts > 0  # [K]; only real sources have tokens
  write = jnp.where(is_present, present, num_sources)  # slots to drop -> S
  num_present = jnp.sum(is_present)
  finite = jnp.isfinite(loss) & jnp.all(jnp.isfinite(new_prompts))
  new_state = state.replace(
      step=state.step + 1,
      prompts=_put(state.prompts, write, new_prompts),
      opt_state=_put(state.opt_state, write, opt_state),
      source_steps=state.source_steps.at[write].add(1, mode="drop"))
  metrics = {"loss": loss / jnp.maximum(num_present, 1), "loss_sum": loss,
             "num_sources": num_present, "target_tokens": jnp.sum(counts), "finite": finite}
  return new_state, metrics


def dropout_key(seed: int, impl: str | None = "auto") -> Array:
  """The run's dropout key; its PRNG draws every dropout mask of the step.

  Args:
    seed: the run's seed.
    impl: "auto": on GPUs threefry keys whose draws lower to JAX's CUDA threefry kernel (this switches
      `jax_threefry_gpu_kernel_lowering` on where the JAX in use still has that option; XLA's own
      expansion of threefry is the slowest to compile: with a draw per dropout site the T0_3B step
      compiled in 83 s on 2 CPU cores against 27 s with RngBitGenerator, before the model drew each
      stack's masks at once); elsewhere "unsafe_rbg" (XLA's RngBitGenerator, T5X's choice for speed
      on TPUs). Or a `jax.random.key` implementation ("unsafe_rbg", "threefry2x32", "rbg"); None:
      JAX's default. Masks are deterministic for a given backend and device layout.
  """
  if impl == "auto":
    impl = "unsafe_rbg"
    if jax.default_backend() == "gpu":
      impl = "threefry2x32"
      try:
        jax.config.update("jax_threefry_gpu_kernel_lowering", True)
      except AttributeError:  # JAX's changelog plans to remove the option: XLA's threefry then
        pass
  # Fold in 2**31: source seeds (prompts.source_seed) are < 2**31, so no prompt key equals this one.
  return jax.random.fold_in(jax.random.key(seed, impl=impl), 2**31)


def _jit_train_step(**options) -> Callable:
  """`train_step` jitted with the model and optimizer static and the state donated."""
  return jax.jit(train_step, static_argnames=("model", "optimizer"), donate_argnums=0, **options)


# One jitted function for every model and optimizer (static arguments), so runs in one process with the
# same shapes, model (a hashable object holding its config) and optimizer object share a compilation.
_jitted_train_step = _jit_train_step()


def make_train_step(model: PromptedBackbone, optimizer: optax.GradientTransformation, *,
                    partitioner: partitioning.Partitioner | None = None) -> partitioning.MeshStep:
  """The jitted `step(state, params, batch, rng) -> (state, metrics)`; `state` is donated.

  `model` (a hashable `PromptedBackbone`, e.g. `Backbone.model`) and `optimizer` are static: steps made
  with equal ones share a compilation. With a `partitioner`, call it on a state placed by `place_state`
  and a batch placed by `place_batch`; its mesh and logical axis rules apply while it traces (the prompt
  table and optimizer state stay replicated). `step.lower(state, params, batch, rng)` lowers the same
  program for abstract arguments (`rospr plan`).
  """
  if partitioner is None:
    return partitioning.MeshStep(_jitted_train_step, None, model=model, optimizer=optimizer)
  return partitioning.MeshStep(_mesh_train_step(partitioner.mesh), partitioner, model=model, optimizer=optimizer)


def step_memory_lower_bound(config, *, batch_size: int, input_length: int, target_length: int,
                            prompt_length: int) -> int:
  """Bytes one training step needs at the least, from the shapes alone (before anything is allocated
  or compiled), with S = PROMPT_LENGTH + INPUT_LENGTH encoder and T = TARGET_LENGTH decoder positions:

  - on the host, the batch (inputs and targets, int32, twice) and the decoder's causal layout, a
    [T, T] bool array (`t5._choice_self_attention_layout`);
  - on the device, the relative position biases of both stacks, [1, A, S, S] and [1, A, T, T]
    (every attention implementation builds them), the states [B, S + T, H] of one layer, and, with
    einsum attention, one layer's largest attention weights [B, A, Tq, Tk] twice (the weights and
    their gradient in the backward pass): the encoder's [S, S] or the decoder's [T, T] and [T, S].

  A lower bound whatever the remat policy and whatever XLA fuses: these exist at once, so a step over
  it cannot run; a step under it may still not fit (XLA decides)."""
  s, t = prompt_length + input_length, target_length
  itemsize = np.dtype(config.dtype).itemsize
  host = 2 * 4 * batch_size * (input_length + target_length) + t * t
  biases = itemsize * config.num_heads * (s * s + t * t)
  states = itemsize * batch_size * (s + t) * config.emb_dim
  weights = 0
  if config.attention_impl == "einsum":
    weights = 2 * itemsize * batch_size * config.num_heads * max(s * s, t * t + t * s)
  return host + biases + states + weights


def check_step_fits(config, **shapes) -> None:
  """Refuses, naming the gin macros, a step whose lower bound exceeds the memory of this process's device
  (`partitioning.memory_limit`): such a run was killed by the kernel after a while, printing nothing."""
  need = step_memory_lower_bound(config, **shapes)
  limit, where = partitioning.memory_limit()
  if need > limit:
    raise ValueError(
        f"One training step needs at least {need / 2**30:,.1f} GiB (BATCH_SIZE {shapes['batch_size']} rows of "
        f"PROMPT_LENGTH {shapes['prompt_length']} + INPUT_LENGTH {shapes['input_length']} input and "
        f"TARGET_LENGTH {shapes['target_length']} target tokens), more than the {limit / 2**30:,.1f} GiB of "
        f"{where}; lower BATCH_SIZE, INPUT_LENGTH, TARGET_LENGTH or PROMPT_LENGTH.")


@functools.lru_cache(maxsize=8)
def _mesh_train_step(mesh: jax.sharding.Mesh) -> Callable:
  """The jitted step of a mesh: the new state and the metrics come out replicated, as the state went
  in (left to XLA's sharding propagation, the prompt table can come out split over `model`, seen with
  dropout on). One per mesh, so the steps of a mesh share a compilation."""
  return _jit_train_step(out_shardings=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))


def place_state(state: PromptTrainState, partitioner: partitioning.Partitioner) -> PromptTrainState:
  """Replicates the prompt table and optimizer state over the partitioner's mesh."""
  return jax.tree.map(lambda x: partitioner.place(x, partitioner.replicated), jax.device_get(state))


def place_batch(batch: dict[str, np.ndarray], partitioner: partitioning.Partitioner | None) -> Batch:
  """Puts a numpy batch on the devices: split over `data` with a partitioner, else on the default device.

  With a partitioner every process passes the same global batch (the batch iterator is deterministic)
  and places only its own devices' rows.
  """
  if partitioner is None:
    return {k: jnp.asarray(v) for k, v in batch.items()}
  data = partitioner.data_size
  size = len(batch["source_ids"])
  if size % data:
    raise ValueError(f"Batch size {size} is not a multiple of the mesh's data axis ({data} devices).")
  return {k: partitioner.place(v, partitioner.batch_sharding(np.ndim(v))) for k, v in batch.items()}
