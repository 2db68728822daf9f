"""The multitask prompt (MULTITASK): one prompt trained on the union of the sources, from the batches
the per-source prompts see, exported as an ordinary export of one prompt."""

from __future__ import annotations

import numpy as np

from rospr_jax.backbone import Backbone
from rospr_jax.prompt import export, trainer
from rospr_jax.prompt.input_pipeline import BatchIterator, as_one_source

RUN = dict(num_steps=3, batch_size=8, input_length=16, target_length=4, prompt_length=3, log_every=3,
           dropout_rate=0.0, use_mesh=False, summaries=False)


def test_the_multitask_prompt_is_one_prompt_whose_batches_hold_every_source(tmp_path, config, params, examples,
                                                                            run_configs):
  data = examples(3, 30, seed=2)
  merged = as_one_source(data)
  assert merged.names == ["multitask"] and merged.merged_from == ["s0", "s1", "s2"]
  # The same stream of examples: batch i of the merged run holds the examples of the per-source run's
  # batch i, so every source is there in the proportion the per-source prompts saw.
  per_source = BatchIterator(data, batch_size=8, input_length=16, target_length=4, seed=0)
  one = BatchIterator(merged, batch_size=8, input_length=16, target_length=4, seed=0)
  seen = set()
  for position in range(4):
    a, b = per_source.batch_at(position), one.batch_at(position)
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
    np.testing.assert_array_equal(a["targets"], b["targets"])
    assert set(b["source_ids"].tolist()) == {0}
    seen |= set(a["source_ids"].tolist())
  assert seen == {0, 1, 2}

  backbone = Backbone(config, params, fingerprint="0123456789abcdef", description={"test": True})
  result = trainer.train(model_dir=str(tmp_path / "mt"), examples=data, backbone=backbone, multitask=True,
                         **run_configs(**RUN))
  assert result.names == ["multitask"] and result.state.prompts.shape == (1, 3, config.emb_dim)
  assert int(result.state.source_steps[0]) == 3  # every batch trains the one prompt
  table = export.load_prompt_table(result.export_dir, "MT_PROMPT")
  assert table.names == ["multitask"] and table.prompts.shape == (1, 3, config.emb_dim)
  np.testing.assert_array_equal(table.prompts, np.asarray(result.state.prompts))
  manifest = export.load_prompts(result.export_dir).manifest
  assert manifest["multitask_of"] == ["s0", "s1", "s2"]
