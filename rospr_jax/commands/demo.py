"""`rospr demo`: the offline end-to-end run, every step of RoSPr on a tiny model, on a laptop CPU.

    rospr demo [--output_dir demo_output] [--quick]

Needs only what `scripts/setup.sh` installs and caches (the bigbench archive and the offline
vocabulary, from `rospr fetch`). Writes `report.md`, JSON and plots into the output directory:

1. Sources: BIG-bench multiple-choice tasks other than the 14 held-out ones (the `bigbench` archive
   that `rospr fetch` cached), each rendered with its own format (its "hard prompt"); their train
   splits train, their validation splits are the held-in evaluation.
2. Backbone: a tiny T0-like T5 trained on all sources at once (multi-task, hard-prompted), as T0 was
   made from T5 on P3. Saved as a Hugging Face checkpoint with the offline SentencePiece vocabulary.
3. Soft prompts: one per source, all trained jointly with the backbone frozen.
4. Library: n instances per source embedded by the backbone's encoder (the retriever), ScaNN index.
5. Retrieval and evaluation: the 14 BIG-bench held-out tasks and the held-in validation splits, with
   the hard prompt alone (T0) and the prompts RoSPr, INTER, VAR and INTER+VAR retrieve.
6. Report: `report.md` (with the tables of `held_out/results.md` and `held_in/results.md`), JSON and
   plots, under the output directory.

Every step reuses the project's one implementation of it (trainer, library builder, retrieval,
scorer, report); this module only wires them together with small settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
import time

import jax
import numpy as np

from rospr_jax import artifacts, paths
from rospr_jax.backbone import load_backbone
from rospr_jax.commands import targets as targets_lib
from rospr_jax.data import archives, bigbench, prompted, vocabulary
from rospr_jax.eval import evaluate, report
from rospr_jax.library import build as library_build
from rospr_jax.library import embed, sources as sources_lib
from rospr_jax.model import get_config, multitask, save_hf
from rospr_jax.prompt import input_pipeline, trainer
from rospr_jax.tokenization import Tokenizer


@dataclasses.dataclass(frozen=True)
class DemoSettings:
  """Sizes of the offline run (defaults fit 15 minutes on 2 CPU cores)."""
  num_sources: int = 16            # S BIG-bench source tasks
  min_train_examples: int = 64     # a source needs at least this many training examples
  max_train_per_source: int = 400  # training examples per source (backbone and prompts)
  input_length: int = 128          # T of training batches
  target_length: int = 32          # L of training batches
  batch_size: int = 32
  backbone_steps: int = 500
  backbone_learning_rate: float = 3e-3
  prompt_length: int = 20          # P
  prompt_steps: int = 200
  library_n: int = 50              # instances per source in the library
  max_eval_examples: int = 100     # per target (seeded sample)
  max_held_in_examples: int = 50   # per source's validation split
  max_source_examples: int = 5000  # skip very large source tasks (reading them costs minutes)
  held_out_tasks: tuple[str, ...] | None = None  # a subset of the 14 BIG-bench targets (None: all)
  methods: tuple[str, ...] = ("chance",) + evaluate.METHODS
  seed: int = 0


STEP_DIRS = ("backbone", "prompts", "library", "held_out", "held_in")


def select_sources(store: bigbench.BigBenchStore, settings: DemoSettings) -> list[tuple]:
  """(task, train examples, validation examples) of S seeded sources with enough training data."""
  needed = settings.min_train_examples + bigbench.MIN_VALIDATION_EXAMPLES
  eligible = [t for t in prompted.bigbench_source_tasks(store)
              if 2 * needed <= t.num_examples() <= settings.max_source_examples]
  if len(eligible) < settings.num_sources:
    raise ValueError(f"Only {len(eligible)} BIG-bench sources have {2 * needed} to "
                     f"{settings.max_source_examples} examples; asked for {settings.num_sources}.")
  rng = np.random.default_rng(settings.seed)
  picked = [eligible[i] for i in sorted(rng.choice(len(eligible), settings.num_sources, replace=False))]
  out = []
  for task in picked:
    train = [ex for ex in task.examples("train") if ex.answer_choices]
    validation = [ex for ex in task.examples("validation") if ex.answer_choices]
    out.append((task, train, validation))
  return out


def training_examples(sources, tokenizer, settings: DemoSettings) -> input_pipeline.SourceExamples:
  """Tokenized (input without EOS, target with EOS) examples, capped per source, seeded."""
  rng = np.random.default_rng(settings.seed)
  examples = []
  for s, (_, train, _) in enumerate(sources):
    keep = rng.permutation(len(train))[:settings.max_train_per_source]
    for i in sorted(keep):
      ex = train[i]
      examples.append(input_pipeline.Example(s, tokenizer.encode_input(ex.inputs),
                                             tokenizer.encode_target(ex.targets)))
  return input_pipeline.SourceExamples([task.name for task, _, _ in sources], examples)


def held_in_target(task, validation, settings: DemoSettings) -> evaluate.Target:
  rng = np.random.default_rng(settings.seed)
  keep = sorted(rng.permutation(len(validation))[:settings.max_held_in_examples])
  chosen = [validation[i] for i in keep]
  return evaluate.Target(name=task.name, dataset=task.dataset_label, template=task.template_name,
                         inputs=tuple(ex.inputs for ex in chosen),
                         choices=tuple(tuple(ex.answer_choices) for ex in chosen),
                         is_correct=tuple(tuple(ex.is_correct) for ex in chosen))


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
  params, losses = multitask.train_backbone(config, batches, steps=steps, learning_rate=learning_rate,
                                            seed=seed)
  save_hf(backbone_dir, config, params)
  shutil.copyfile(vocab_path, os.path.join(backbone_dir, "spiece.model"))
  return losses


def _within_noise(summary: dict, reference: str, method: str) -> list[tuple[str, float, float, bool]]:
  """Per dataset: (name, reference accuracy, method accuracy, whether the method's accuracy lies in
  the reference's Wilson 95% interval over the dataset's examples), in percent."""
  rows = []
  for d in summary["datasets"]:
    a, b = summary["mean"][reference].get(d), summary["mean"][method].get(d)
    if a is None or b is None:
      continue
    low, high = report.interval(a, summary["examples"].get(d))
    rows.append((report.short_names([d])[0], 100 * a, 100 * b, bool(low <= b <= high)))
  return rows


def _claims(summaries: dict) -> dict:
  """The report's sentences about the tables, written from their numbers (not fixed text)."""
  held_out, held_in = summaries["held_out"], summaries["held_in"]
  chance = _within_noise(held_out, "T0", evaluate.CHANCE)
  worst = max(chance, key=lambda r: abs(r[1] - r[2]))
  average = lambda s, m: 100 * s["average_mean"][m]
  held_out_sentence = (
      f"On the {len(chance)} BIG-bench held-out tasks its `T0` row averages {average(held_out, 'T0'):.1f}% "
      f"against {average(held_out, evaluate.CHANCE):.1f}% for `chance` (the expected accuracy of a uniform "
      f"guess); chance lies inside the 95% interval of T0's accuracy on {sum(r[3] for r in chance)} of them, "
      f"and the largest gap is {worst[0]} ({worst[1]:.1f}% vs chance {worst[2]:.1f}%). So the held-out "
      "table shows the pipeline running end to end, not the paper's gains.")
  moved = _within_noise(held_in, "T0", "RoSPr")
  diffs = [b - a for _, a, b, _ in moved]
  held_in_sentence = (
      f"The retrieved prompt scored {average(held_in, 'RoSPr') - average(held_in, 'T0'):+.2f} points against "
      f"the hard prompt alone (RoSPr minus `T0`, averaged over the sources); per source the difference runs "
      f"from {min(diffs):+.1f} to {max(diffs):+.1f} points, and for {sum(r[3] for r in moved)} of "
      f"{len(moved)} sources RoSPr's accuracy lies inside the 95% interval of T0's: within noise.")
  counts = [n for s in summaries.values() for n in s["examples"].values()]
  return {"held_out_sentence": held_out_sentence, "held_in_sentence": held_in_sentence,
          "n_range": f"{min(counts)}-{max(counts)}",
          "one_example_points": f"{100 / max(counts):.1f}-{100 / min(counts):.1f} points"}


def _explanation(settings: DemoSettings, timings: dict, facts: dict) -> str:
  rows = "\n".join(f"| {step} | {seconds:.0f} |" for step, seconds in timings.items())
  return f"""# rospr-jax offline demo

Everything here ran offline on this machine's CPU ({os.cpu_count()} cores, JAX {jax.__version__}) in
{sum(timings.values()) / 60:.1f} minutes: a tiny T0-like backbone ({facts['parameters'] / 1e6:.2f}M parameters,
vocabulary {facts['vocab_size']}) trained on {settings.num_sources} BIG-bench source tasks, one
{settings.prompt_length}-token soft prompt per source, a library of {settings.library_n} instances per
source, and retrieval for every target from {evaluate.Evaluator.selection.num_queries} unlabeled inputs.

**What these numbers mean.** The backbone is about {2.78e9 / facts['parameters']:,.0f} times smaller than
T0_3B and saw {facts['training_examples']:,} training examples. {facts['held_out_sentence']} The held-in
table (validation splits of the sources) is where a tiny model can show the mechanism: there, RoSPr
retrieved the source's own prompt for {facts['held_in_own_prompt']} of {facts['held_in_targets']}
sources. {facts['held_in_sentence']} Each table has a row `n` (examples per dataset) and, in each
`results.md`, a version with Wilson 95% intervals: with {facts['n_range']} examples a task, one example
moves its accuracy by {facts['one_example_points']}.

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


def run(output_dir: str, settings: DemoSettings = DemoSettings()) -> dict:
  """Runs the whole offline pipeline into `output_dir` (a folder or a URL, published whole when the run
  succeeds, replacing an earlier run's); returns the two result summaries."""
  with paths.output_directory(output_dir, "--output_dir", replace=True) as local:
    return _run_in(local, settings)


def _run_in(output_dir: str, settings: DemoSettings) -> dict:
  os.makedirs(output_dir, exist_ok=True)
  for step_dir in STEP_DIRS:  # A rerun starts over: the demo's outputs are all derived.
    path = os.path.join(output_dir, step_dir)
    if os.path.exists(path):
      logging.info("demo: replacing %s", path)
      shutil.rmtree(path)
  timings: dict[str, float] = {}
  clock = time.perf_counter()

  def lap(step: str) -> None:
    nonlocal clock
    now = time.perf_counter()
    timings[step] = now - clock
    clock = now
    logging.info("demo: %s done in %.0f s", step, timings[step])

  store = bigbench.BigBenchStore()
  vocab_path = vocabulary.offline_vocabulary_path()
  tokenizer = Tokenizer(vocab_path)
  sources = select_sources(store, settings)
  held_out_tasks = [t for t in prompted.bigbench_target_tasks(store)
                    if settings.held_out_tasks is None or t.task in settings.held_out_tasks]
  held_out = [targets_lib.target_from_task(t, max_examples=settings.max_eval_examples, seed=settings.seed)
              for t in held_out_tasks]
  held_in = [held_in_target(task, validation, settings) for task, _, validation in sources if validation]
  data = training_examples(sources, tokenizer, settings)
  lap("read data")

  backbone_dir = os.path.join(output_dir, "backbone")
  losses = train_stand_in_backbone(backbone_dir, data, vocab_path, steps=settings.backbone_steps,
                                   learning_rate=settings.backbone_learning_rate,
                                   batch_size=settings.batch_size, input_length=settings.input_length,
                                   target_length=settings.target_length, seed=settings.seed)
  lap("train backbone")

  frozen = load_backbone(backbone_dir, dtype="float32")  # what every command loads from this folder
  result = trainer.train(model_dir=os.path.join(output_dir, "prompts"), examples=data, backbone=frozen,
                         num_steps=settings.prompt_steps, prompt_length=settings.prompt_length,
                         batch_size=settings.batch_size, input_length=settings.input_length,
                         target_length=settings.target_length, dropout_rate=0.0,
                         remat_policy="none",  # the tiny model fits; recomputing costs 1.2x on the CPU
                         seed=settings.seed, checkpoint_every=settings.prompt_steps, log_every=100,
                         summaries=False)
  prompt_table = np.asarray(result.state.prompts, np.float32)  # [S, P, H]
  lap("train soft prompts")

  embedder = embed.Embedder(frozen.config, frozen.params, max_length=settings.input_length)
  library_sources = [sources_lib.SourceTexts(task.name, [ex.inputs for ex in train])
                     for task, train, _ in sources]
  library, library_report = library_build.build_library(
      os.path.join(output_dir, "library"), library_sources, prompt_table, embedder,
      tokenizer.encode_input, n=settings.library_n, seed=settings.seed, overwrite=True,
      prompts_backbone=frozen.fingerprint)
  lap("build library")

  evaluator = evaluate.Evaluator(params=frozen.params, config=frozen.config, tokenizer=tokenizer,
                                 library=library, embedder=embedder, seed=settings.seed, max_input_length=512)
  summaries, selections_by_group = {}, {}
  for name, targets in (("held_out", held_out), ("held_in", held_in)):
    out = os.path.join(output_dir, name)
    records, selections = evaluator.evaluate(targets, settings.methods,
                                             selections_dir=os.path.join(out, "selections"),
                                             progress=logging.info)
    selections_by_group[name] = selections
    summaries[name] = report.write_report(
        out, records, retrieval=evaluate.retrieval_frequencies(selections),
        extra={"selections": selections}, sources=library.source_names,
        title=name.replace("_", "-").capitalize())
    lap(f"evaluate {name.replace('_', '-')}")

  own = sum((selections_by_group["held_in"].get(t.name, {}).get("RoSPr", {}).get("names") or [None])[0] == t.name
            for t in held_in)
  held_in_average = summaries["held_in"]["average_mean"]
  facts = {"parameters": frozen.config.num_parameters(), "vocab_size": frozen.config.vocab_size,
           "held_in_rospr_minus_t0": 100 * (held_in_average.get("RoSPr", float("nan"))
                                           - held_in_average.get("T0", float("nan"))),
           "training_examples": len(data.examples), "held_in_own_prompt": int(own),
           "held_in_targets": len(held_in),
           "sources": [task.name for task, _, _ in sources], "backbone_final_loss": float(np.mean(losses[-50:])),
           "library": library_report, "settings": dataclasses.asdict(settings), "timings_s": timings,
           **_claims(summaries)}
  sections = [_explanation(settings, timings, facts)]
  for name, title in (("held_out", "Held-out: the 14 BIG-bench tasks"),
                      ("held_in", "Held-in: validation splits of the source tasks")):
    sections += [f"## {title}", report.markdown_table(summaries[name]),
                 f"![accuracy]({name}/accuracy.png)\n\n![retrieval]({name}/retrieval.png)"]
  artifacts.write_text(os.path.join(output_dir, "report.md"), "\n\n".join(sections) + "\n")
  artifacts.write_text(os.path.join(output_dir, "demo.json"),
                      json.dumps({"facts": facts, "summaries": summaries}, indent=1, default=str))
  return summaries


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog="rospr demo", description=__doc__.splitlines()[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  parser.add_argument("--output_dir", default="demo_output", help="where the report goes")
  parser.add_argument("--quick", action="store_true",
                      help="a much smaller run (a minute or two) to check the pipeline")
  parser.add_argument("--log_level", default="INFO")
  args = parser.parse_args(argv)
  from rospr_jax import gin_cli  # pylint: disable=g-import-not-at-top
  gin_cli.setup_logging(args.log_level)
  # Compiled programs are cached across runs (the demo compiles a few dozen shapes).
  jax.config.update("jax_compilation_cache_dir", str(archives.cache_dir() / "jax_compilation_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  settings = DemoSettings()
  if args.quick:
    settings = dataclasses.replace(settings, num_sources=6, max_train_per_source=64, backbone_steps=30,
                                   prompt_steps=10, library_n=16, max_eval_examples=12,
                                   max_held_in_examples=12, input_length=96, target_length=16)
  start = time.perf_counter()
  summaries = run(args.output_dir, settings)
  minutes = (time.perf_counter() - start) / 60
  print(f"Demo finished in {minutes:.1f} min; report: {os.path.join(args.output_dir, 'report.md')}")
  for name, summary in summaries.items():
    averages = ", ".join(f"{m} {100 * a:.1f}%" for m, a in summary["average_mean"].items())
    print(f"  {name}: {averages}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
