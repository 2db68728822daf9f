"""The steps of `rospr demo` (`commands/demo.py` parses its flags, then imports this module: `rospr demo
--help` answers before JAX loads). What each step does: `rospr_jax/commands/demo.py`."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time

import jax
import numpy as np

from rospr_jax import storage
from rospr_jax.backbone import Backbone, load_backbone
from rospr_jax.commands import demo_analysis
from rospr_jax.commands import targets as targets_lib
from rospr_jax.data import generated, vocabulary
from rospr_jax.eval import report
from rospr_jax.eval.batching import Scorer
from rospr_jax.library import build as library_build
from rospr_jax.library import embed, sources as sources_lib
from rospr_jax.model import get_config, model_for, multitask, save_hf
from rospr_jax.pipeline import evaluate, methods as methods_lib
from rospr_jax.pipeline.labelled import FineTuneConfig
from rospr_jax.prompt import configs, input_pipeline, trainer
from rospr_jax.retrieval.selection import SelectionConfig
from rospr_jax.tokenization import Tokenizer

# chance, the default methods (T0 and the paper's rules), the reference rows Random and the oracle, then
# the baselines: the multitask prompt and the prompts fine-tuned on 16 labels (from RoSPr's, and not).
FINE_TUNE_LABELS = 16
METHODS = (methods_lib.CHANCE.name, *evaluate.default_methods(), methods_lib.RANDOM.name,
           methods_lib.ORACLE.name, methods_lib.MULTITASK.name,
           *(methods_lib.fine_tuned(FINE_TUNE_LABELS, from_rospr).name for from_rospr in (True, False)))


@dataclasses.dataclass(frozen=True)
class DemoSettings:
  """Sizes of the offline run (its measured time: bench/RESULTS.md, "Method")."""
  train_per_source: int = 200      # training examples per template (backbone and prompts)
  eval_examples: int = 100         # test examples per held-out target
  input_length: int = 48           # T of training batches
  target_length: int = 4           # L of training batches
  batch_size: int = 32
  backbone_steps: int = 600
  backbone_learning_rate: float = 3e-3
  prompt_length: int = 16          # P
  prompt_steps: int = 4000
  multitask_steps: int = 1000      # the multitask prompt's steps (of batch_size examples of every source)
  fine_tune: FineTuneConfig = FineTuneConfig(epochs=20, batch_size=32)
  library_n: int = 32              # instances per source in the library
  selection: SelectionConfig = SelectionConfig(num_queries=16, num_neighbors=8, num_prompts=3, top_k=5)
  methods: tuple[str, ...] = METHODS
  seed: int = 0


QUICK = DemoSettings(train_per_source=64, eval_examples=24, backbone_steps=60, prompt_steps=40, library_n=8,
                     selection=SelectionConfig(num_queries=8, num_neighbors=4, num_prompts=2, top_k=3),
                     multitask_steps=10, fine_tune=FineTuneConfig(epochs=2, batch_size=32))


def _examples(templates, tokenizer, settings: DemoSettings, names=None) -> input_pipeline.SourceExamples:
  """Tokenized (input without EOS, target with EOS) train examples of `templates`, source ids by
  position in `names` (default: the templates themselves)."""
  names = names or [t.name for t in templates]
  out = []
  for template in templates:
    task = generated.GeneratedTask(template, settings.seed, {"train": settings.train_per_source})
    for ex in task.examples("train"):
      out.append(input_pipeline.Example(names.index(template.name) if template.name in names else 0,
                                        tokenizer.encode_input(ex.inputs), tokenizer.encode_target(ex.targets)))
  return input_pipeline.SourceExamples(list(names), out)


def train_stand_in_backbone(backbone_dir: str, data: input_pipeline.SourceExamples, vocab_path: str, *,
                            steps: int, learning_rate: float, batch_size: int, input_length: int,
                            target_length: int, seed: int) -> list[float]:
  """The offline stand-in for T0: a tiny T5 multitask-trained on every weight with `data`, saved as a
  Hugging Face checkpoint with `vocab_path` as its spiece.model (what every command then loads).

  Returns:
    the loss of every step.
  """
  vocab_size = -(-Tokenizer(vocab_path).vocab_size // 128) * 128  # embeddings padded as T5's are
  config = get_config("tiny", vocab_size=vocab_size)
  batches = input_pipeline.BatchIterator(data, batch_size=batch_size, input_length=input_length,
                                         target_length=target_length, seed=seed)
  params, losses = multitask.train_backbone(model_for(config), batches, steps=steps,
                                            learning_rate=learning_rate, seed=seed)
  save_hf(backbone_dir, config, params)
  shutil.copyfile(vocab_path, os.path.join(backbone_dir, "spiece.model"))
  return losses


def _explanation(settings: DemoSettings, timings: dict, facts: dict) -> str:
  rows = "\n".join(f"| {step} | {seconds:.0f} |" for step, seconds in timings.items())
  return f"""# rospr-jax offline demo

Everything here ran offline on this machine's CPU ({os.cpu_count()} cores, JAX {jax.__version__}) in
{sum(timings.values()) / 60:.1f} minutes, on the project's generated task family (`rospr_jax/data/generated.py`):
a tiny T0-like backbone ({facts['parameters'] / 1e6:.2f}M parameters, vocabulary {facts['vocab_size']}) trained on
{facts['backbone_templates']} templates (every skill, answer formats {', '.join(generated.BACKBONE_FORMATS)}),
one {settings.prompt_length}-token soft prompt for each of {len(facts['sources'])} source templates, a library of
{settings.library_n} instances per source, and retrieval for each of {facts['targets']} held-out targets from
{settings.selection.num_queries} unlabeled inputs.

**The setting.** "Format" targets ask a skill in an answer format ({', '.join(generated.NEW_FORMATS)}) that the
stand-in T0 was never trained on, in a wording (frame) that the sources of that skill and format do
not use; such a source, in other wordings, is what RoSPr should retrieve. "Cross" targets ask one in a
new format that only other skills' sources share; "template" targets ask one in a format T0 knows, in a
wording no source has. `Oracle (labels)` picks the best library prompt with the target's labels: an
upper bound, not a zero-shot method. `Random` is a seeded random library prompt; `chance` a uniform
guess. `MT prompt` is one prompt trained on the union of the sources ({settings.multitask_steps} steps of
the per-source prompts' batches), the same for every target; `Fine-tuned (16 labels, ...)` are prompts
tuned on 16 labelled examples of each target's training split (never its test examples), from RoSPr's
prompt or from the default initializer, all trained jointly ({settings.fine_tune.epochs} epochs).

**What the intervals show.** {facts['verdict']} {facts['baselines']} {facts['factor_sentence']}

**The paper's setting.** With the T0_3B checkpoint (Hugging Face `bigscience/T0_3B`, downloaded on a
machine with network access) and the P3 source datasets in `$ROSPR_DATA_DIR`:

```bash
rospr train-prompts --gin_file=models/t0_3b.gin --gin_file=prompt_tuning/train_seqio.gin \\
  --gin.CHECKPOINT="'/ckpt/T0_3B'" --gin.MODEL_DIR="'/runs/prompts'" \\
  --gin.SOURCES="['rospr_t0_train']" --gin.EXAMPLES_PER_SOURCE=5000 --gin.TRAIN_STEPS=20000
rospr build-library --out /runs/library --prompts /runs/prompts/export --tasks rospr_t0_train \\
  --n 100 --retriever /ckpt/retriever --vocab /ckpt/T0_3B/spiece.model
rospr evaluate --gin_file=models/t0_3b.gin --gin_file=eval/paper.gin --gin.CHECKPOINT="'/ckpt/T0_3B'" \\
  --gin.LIBRARY_DIR="'/runs/library'" --gin.RETRIEVER_CHECKPOINT="'/ckpt/retriever'" \\
  --gin.OUTPUT_DIR="'/runs/eval'" --gin.DATA_DIR="'/data/p3'"
```

| step | seconds |
|---|---|
{rows}
"""


KIND = "rospr_demo"  # the manifest's "kind" of the demo's output folder


def run(output_dir: str, settings: DemoSettings = DemoSettings(), *, overwrite: bool = False) -> dict:
  """Runs the whole offline pipeline into `output_dir` (a folder or a URL: a folder artifact, committed
  when the run succeeds; an earlier demo's output is replaced only with `overwrite`, anything else
  there is refused before any work); returns {"summary", "pooled", "per_target"}."""
  if not storage.is_url(output_dir):  # what a killed demo left beside it
    final = storage.absolute(output_dir)
    storage.remove_leftovers(os.path.dirname(final), names=[os.path.basename(final)])
  with storage.output_folder(output_dir, "--output_dir", kind=KIND, overwrite=overwrite) as local:
    return _run_in(local, settings, final_dir=output_dir)


def check_parent_writable(output_dir: str) -> None:
  """Refuses, before any work, a local `--output_dir` whose parent cannot be written (the destination
  itself is checked by `run`'s `storage.output_folder` before any work too)."""
  if storage.is_url(output_dir):
    return
  parent = os.path.dirname(os.path.abspath(output_dir.removeprefix("file://")))
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.access(parent, os.W_OK | os.X_OK):
    raise ValueError(f"--output_dir {output_dir}: {parent} cannot be written (permission denied); give a "
                     "folder you can write.")


def _generate(sources, targets, tokenizer, settings: DemoSettings):
  """(the sources' training examples, the stand-in T0's, the held-out targets to evaluate)."""
  held_out = [targets_lib.target_from_task(generated.GeneratedTask(t, settings.seed),
                                           max_examples=settings.eval_examples, seed=settings.seed)
              for _, t in targets]
  return (_examples(sources, tokenizer, settings), _examples(generated.backbone_templates(), tokenizer, settings),
          held_out)


def _train_prompts(model_dir: str, data: input_pipeline.SourceExamples, frozen: Backbone,
                   settings: DemoSettings, multitask: bool = False) -> np.ndarray:
  """One soft prompt per source of `data`, trained jointly on the frozen backbone, [S, P, H] float32;
  with `multitask`, one prompt trained on all of them ([1, P, H], `settings.multitask_steps`)."""
  result = trainer.train(
      model_dir=model_dir, examples=data, backbone=frozen, multitask=multitask,
      loop=configs.LoopConfig(num_steps=settings.multitask_steps if multitask else settings.prompt_steps,
                              log_every=200, seed=settings.seed, summaries=False),
      shapes=configs.ShapeConfig(batch_size=settings.batch_size, input_length=settings.input_length,
                                 target_length=settings.target_length, prompt_length=settings.prompt_length),
      # the tiny model fits; recomputing costs 1.2x on the CPU
      step=configs.StepConfig(dropout_rate=0.0, remat_policy="none"),
      checkpointing=configs.CheckpointConfig(checkpoint_every=settings.prompt_steps))
  return np.asarray(result.state.prompts, np.float32)  # [S, P, H]


def _build_library(directory: str, sources, prompt_table: np.ndarray, frozen: Backbone,
                   embedder: embed.Embedder, tokenizer: Tokenizer, settings: DemoSettings, name: str):
  """The library of `settings.library_n` training inputs per source template ([S, P, H] `prompt_table`
  row s the prompt of sources[s]), embedded by `embedder` and called `name` in records; returns (the
  library, its build report)."""
  library_sources = [sources_lib.SourceTexts(t.name, [ex.inputs for ex in generated.GeneratedTask(
      t, settings.seed, {"train": settings.train_per_source}).examples("train")]) for t in sources]
  return library_build.build_library(
      directory, library_sources, prompt_table, embedder,
      tokenizer.encode_input, draw=library_build.DrawConfig(settings.library_n, settings.seed),
      output=library_build.OutputConfig(overwrite=True, name=name), prompts_backbone=frozen.fingerprint)


def _evaluate(output_dir: str, frozen: Backbone, tokenizer: Tokenizer, retrieval, held_out, targets,
              multitask_prompt: np.ndarray, settings: DemoSettings) -> tuple[list, dict, dict]:
  """Every method of `settings` on the held-out targets (`retrieval`: the library and its retriever;
  the fine-tuned methods draw their labelled examples from each target's training split), and the
  report (results.*, plots); returns (records, selections, summary)."""
  library, embedder = retrieval
  labelled = {target.name: targets_lib.labelled_examples(generated.GeneratedTask(template, settings.seed), target,
                                                         FINE_TUNE_LABELS, settings.fine_tune.seed)
              for (_, template), target in zip(targets, held_out)}
  scorer = Scorer(frozen.params, frozen.model, batch_size=64, max_input_length=128)
  evaluator = evaluate.Evaluator(scorer, tokenizer, evaluate.retriever_for(
      library, embedder, tokenizer, scorer, settings.selection, settings.seed),
      multitask_prompt=multitask_prompt, labelled=labelled, fine_tune=settings.fine_tune)
  records, selections = evaluator.evaluate(held_out, settings.methods,
                                           selections_dir=os.path.join(output_dir, "selections"),
                                           progress=logging.info)
  summary = report.write_report(output_dir, records, retrieval=evaluate.retrieval_frequencies(selections),
                                extra={"selections": selections}, sources=library.source_names,
                                ticks=methods_lib.reference_ticks(),
                                title="Held-out targets of the generated family")
  return records, selections, summary


def _run_in(output_dir: str, settings: DemoSettings, final_dir: str) -> dict:
  """The demo's steps, written into `output_dir`, the folder that becomes `final_dir` when it is
  committed (records and reports name the library where it will be)."""
  timings: dict[str, float] = {}
  clock = time.perf_counter()

  def lap(step: str) -> None:
    nonlocal clock
    now = time.perf_counter()
    timings[step] = round(now - clock, 1)
    clock = now
    logging.info("demo: %s done in %.0f s (stage %d of 7)", step, timings[step], len(timings))

  vocab_path = vocabulary.offline_vocabulary_path()
  tokenizer = Tokenizer(vocab_path)
  sources, targets = generated.source_templates(), generated.target_templates()
  data, seen, held_out = _generate(sources, targets, tokenizer, settings)
  lap("generate data")

  backbone_dir = os.path.join(output_dir, "backbone")
  losses = train_stand_in_backbone(backbone_dir, seen, vocab_path, steps=settings.backbone_steps,
                                   learning_rate=settings.backbone_learning_rate,
                                   batch_size=settings.batch_size, input_length=settings.input_length,
                                   target_length=settings.target_length, seed=settings.seed)
  lap("train backbone")

  frozen = load_backbone(backbone_dir, dtype="float32")  # what every command loads from this folder
  prompt_table = _train_prompts(os.path.join(output_dir, "prompts"), data, frozen, settings)  # [S, P, H]
  lap("train soft prompts")
  multitask_prompt = _train_prompts(os.path.join(output_dir, "mt_prompt"), data, frozen, settings,
                                    multitask=True)[0]  # [P, H]
  lap("train the multitask prompt")

  embedder = embed.Embedder(frozen.model, frozen.params, max_length=settings.input_length)
  library, library_report = _build_library(os.path.join(output_dir, "library"), sources, prompt_table, frozen,
                                           embedder, tokenizer, settings,
                                           name=f"{storage.absolute(final_dir)}/library")
  lap("build library")

  records, selections, summary = _evaluate(output_dir, frozen, tokenizer, (library, embedder), held_out,
                                            targets, multitask_prompt, settings)
  lap("evaluate")

  methods = [m for m in settings.methods if methods_lib.get(m).needs_backbone]  # chance scores no example
  rows = demo_analysis.per_target(records, selections, targets, methods)
  pooled = demo_analysis.pooled(rows, methods)
  facts = {"parameters": frozen.config.num_parameters(), "vocab_size": frozen.config.vocab_size,
           "backbone_templates": len(generated.backbone_templates()), "targets": len(targets),
           "training_examples": len(data.examples), "sources": [t.name for t in sources],
           "backbone_final_loss": float(np.mean(losses[-50:])), "library": library_report,
           "settings": dataclasses.asdict(settings), "verdict": demo_analysis.verdict(pooled),
           "baselines": demo_analysis.baselines_sentence(pooled),
           "factor_sentence": demo_analysis.factor_sentence(pooled)}
  lap("report")
  facts["timings_s"] = timings
  return _write_report(output_dir, settings, facts, rows, pooled, summary, methods)


def _write_report(output_dir: str, settings: DemoSettings, facts: dict, rows: list, pooled: dict, summary: dict,
                  methods: list) -> dict:
  """report.md (the explanation, the method tables, the paper-style table, the plots) and demo.json."""
  sections = [_explanation(settings, facts["timings_s"], facts), "## Held-out targets",
              demo_analysis.markdown(rows, pooled, methods),
              "Per skill (datasets as columns, as the paper's tables):", report.markdown_table(summary),
              "![accuracy](accuracy.png)\n\n![retrieval](retrieval.png)"]
  storage.write_text(os.path.join(output_dir, "report.md"), "\n\n".join(sections) + "\n")
  storage.write_text(os.path.join(output_dir, "demo.json"), json.dumps(
      {"facts": facts, "per_target": rows, "pooled": pooled, "summary": summary}, indent=1, default=str))
  return {"summary": summary, "pooled": pooled, "per_target": rows}
