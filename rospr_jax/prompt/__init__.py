"""Soft prompts: the module and initializers, the multi-prompt training step, runs and exports."""

from rospr_jax.prompt.export import PromptExport, export_prompts, load_prompts, read_source_prompt
from rospr_jax.prompt.input_pipeline import BatchIterator, Example, SourceExamples
from rospr_jax.prompt.prompts import (Prompt, from_array, from_class_labels, from_file,
                                      from_sample_of_embeddings, initial_table, random_uniform)
from rospr_jax.prompt.train_step import PromptTrainState, init_state, make_train_step, train_step
