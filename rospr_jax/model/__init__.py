"""Flax T5 v1.1 / T0 model, its configuration, partitioning and checkpoint import."""

from rospr_jax.model.config import EOS_ID, PAD_ID, SIZES, T5Config, get_config
from rospr_jax.model.interface import PromptedBackbone, model_for, register_family
from rospr_jax.model.t5 import T5, init_params
from rospr_jax.model.t5_backbone import (T5Backbone, encoder_mask, shift_right, summed_target_log_likelihoods,
                                         token_log_likelihoods)
from rospr_jax.model.t5_layers import relative_position_buckets
from rospr_jax.model.checkpoints import (checkpoint_fingerprint, load_checkpoint, load_fingerprinted,
                                        params_fingerprint, save_hf, save_t5x)

register_family(T5Config, T5Backbone)
