"""The name map between a Hugging Face T5 state dict and the T5X parameter tree.

Names (H model dim, N heads, D head dim, F feed-forward dim, V vocabulary, K buckets); Linear weights
are stored [out, in] by PyTorch and transposed to T5X's [in, out] kernels:

  shared.weight [V, H]                                  -> token_embedder/embedding [V, H]
  {enc,dec}oder.block.0.layer.0.SelfAttention
      .relative_attention_bias.weight [K, N]            -> {enc,dec}oder/relpos_bias/rel_embedding [N, K]
  encoder.block.i.layer.0.SelfAttention.{q,k,v}.weight [N*D, H]
                                                        -> encoder/layers_i/attention/{query,key,value}/kernel
  ....o.weight [H, N*D]                                 -> .../out/kernel [N*D, H]
  encoder.block.i.layer.1.DenseReluDense.{wi_0,wi_1}.weight [F, H] -> encoder/layers_i/mlp/{wi_0,wi_1}/kernel
  ....wo.weight [H, F]                                  -> .../mlp/wo/kernel [F, H]
  decoder.block.i.layer.{0,1,2}                         -> self_attention, encoder_decoder_attention, mlp
  *.layer_norm.weight, {enc,dec}oder.final_layer_norm.weight -> .../*_layer_norm/scale, *_norm/scale
  lm_head.weight [V, H]                                 -> decoder/logits_dense/kernel [H, V]

`encoder.embed_tokens.weight` and `decoder.embed_tokens.weight` are aliases of `shared.weight` and
are skipped; so is `decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight`, which some
checkpoints carry and T5 never uses.
"""

from __future__ import annotations

from rospr_jax.model.config import T5Config


def hf_names(config: T5Config) -> dict[str, tuple[str, bool]]:
  """`{t5x_path: (hf_key, transpose)}` for every parameter of `config`'s model."""
  names: dict[str, tuple[str, bool]] = {"token_embedder/embedding": ("shared.weight", False)}

  def attention(t5x: str, hf: str) -> None:
    for ours, theirs in (("query", "q"), ("key", "k"), ("value", "v"), ("out", "o")):
      names[f"{t5x}/{ours}/kernel"] = (f"{hf}.{theirs}.weight", True)

  def mlp(t5x: str, hf: str) -> None:
    for name in ("wi_0", "wi_1", "wo"):
      names[f"{t5x}/{name}/kernel"] = (f"{hf}.{name}.weight", True)

  for stack in ("encoder", "decoder"):
    names[f"{stack}/relpos_bias/rel_embedding"] = (
        f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight", True)
  for i in range(config.num_encoder_layers):
    t5x, hf = f"encoder/layers_{i}", f"encoder.block.{i}.layer"
    names[f"{t5x}/pre_attention_layer_norm/scale"] = (f"{hf}.0.layer_norm.weight", False)
    attention(f"{t5x}/attention", f"{hf}.0.SelfAttention")
    names[f"{t5x}/pre_mlp_layer_norm/scale"] = (f"{hf}.1.layer_norm.weight", False)
    mlp(f"{t5x}/mlp", f"{hf}.1.DenseReluDense")
  names["encoder/encoder_norm/scale"] = ("encoder.final_layer_norm.weight", False)
  for i in range(config.num_decoder_layers):
    t5x, hf = f"decoder/layers_{i}", f"decoder.block.{i}.layer"
    names[f"{t5x}/pre_self_attention_layer_norm/scale"] = (f"{hf}.0.layer_norm.weight", False)
    attention(f"{t5x}/self_attention", f"{hf}.0.SelfAttention")
    names[f"{t5x}/pre_cross_attention_layer_norm/scale"] = (f"{hf}.1.layer_norm.weight", False)
    attention(f"{t5x}/encoder_decoder_attention", f"{hf}.1.EncDecAttention")
    names[f"{t5x}/pre_mlp_layer_norm/scale"] = (f"{hf}.2.layer_norm.weight", False)
    mlp(f"{t5x}/mlp", f"{hf}.2.DenseReluDense")
  names["decoder/decoder_norm/scale"] = ("decoder.final_layer_norm.weight", False)
  names["decoder/logits_dense/kernel"] = ("lm_head.weight", True)
  return names


def alias_shapes(config: T5Config) -> dict[str, tuple[int, ...]]:
  """Keys some checkpoints carry that duplicate or are unused by the model (accepted, not loaded)."""
  return {
      "encoder.embed_tokens.weight": (config.vocab_size, config.emb_dim),
      "decoder.embed_tokens.weight": (config.vocab_size, config.emb_dim),
      "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight":
          (config.relative_attention_num_buckets, config.num_heads),
  }
