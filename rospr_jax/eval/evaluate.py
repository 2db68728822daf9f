"""`rospr evaluate`: zero-shot rank classification of target (dataset, template) pairs, with the hard
prompt alone (T0) and with the prompts RoSPr, INTER, VAR and INTER+VAR retrieve from a library.

    rospr evaluate --gin_file=eval/bigbench_targets.gin \\
        --gin.CHECKPOINT="'/ckpt/T0_3B'" --gin.LIBRARY_DIR="'/runs/library'" \\
        --gin.RETRIEVER_CHECKPOINT="'/ckpt/retriever'" --gin.OUTPUT_DIR="'/runs/eval'"

For each target: its examples are scored once per method with the encode-once scorer; retrieval
embeds Q seeded queries (the target's unlabeled inputs) once and every rule reuses the same
neighbours and the same VAR rank classification. Each selection is saved (`selection.json` and
`prompt.npy`) under `OUTPUT_DIR/selections/<target>/<method>/`, and the accuracy is computed from that
saved prompt. Results: `results.json`, `results.md` (datasets as columns, methods as rows), plots.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from typing import Any, Callable, Sequence

import numpy as np

from rospr_jax import atomic, paths
from rospr_jax.data import rank_classification
from rospr_jax.eval.batching import RankExample, score_examples

METHODS = ("T0", "RoSPr", "INTER", "VAR", "INTER+VAR")
CHANCE = "chance"  # Expected accuracy of a uniform random guess: a reference row, no model involved.
RULE_OF_METHOD = {"RoSPr": "rospr", "INTER": "inter", "VAR": "var", "INTER+VAR": "inter_var"}


@dataclasses.dataclass(frozen=True)
class Target:
  """One evaluated (dataset, template): rendered examples with their answer choices."""
  name: str
  dataset: str
  template: str
  inputs: tuple[str, ...]                 # [E]
  choices: tuple[tuple[str, ...], ...]    # [E][C_e]
  is_correct: tuple[tuple[bool, ...], ...]  # [E][C_e]


def target_from_task(task, split: str | None = None, *, max_examples: int | None = None,
                     seed: int = 0) -> Target:
  """Reads a `rospr_jax.data.prompted` task's evaluation split into a `Target`.

  Examples without answer choices cannot be rank-classified: they are counted and reported. With
  `max_examples`, a seeded sample of that many examples (in split order) is kept.
  """
  split = split or task.eval_split
  examples, skipped = [], 0
  for ex in task.examples(split):
    if ex.answer_choices:
      examples.append(ex)
    else:
      skipped += 1
  if skipped:
    logging.warning("%s: %d examples of split %r have no answer choices and are not evaluated.",
                    task.name, skipped, split)
  if not examples:
    raise ValueError(f"Target {task.name} has no rank-classification examples in split {split!r}.")
  if max_examples is not None and len(examples) > max_examples:
    keep = np.sort(np.random.default_rng(seed).choice(len(examples), max_examples, replace=False))
    examples = [examples[i] for i in keep]
  return Target(name=task.name, dataset=task.dataset_label, template=task.template_name,
                inputs=tuple(ex.inputs for ex in examples),
                choices=tuple(tuple(ex.answer_choices) for ex in examples),
                is_correct=tuple(tuple(bool(c) for c in ex.is_correct) for ex in examples))


def accuracy_of(scores: Sequence[np.ndarray], is_correct: Sequence[Sequence[bool]]) -> float:
  """T0's rank-classification accuracy from per-example choice scores [C_e]."""
  idx = [(e, c) for e, s in enumerate(scores) for c in range(len(s))]
  flat_scores = np.concatenate([np.asarray(s, np.float64) for s in scores])
  flat_correct = [flag for flags in is_correct for flag in flags]
  return rank_classification.accuracy(idx, flat_scores, flat_correct)


def chance_accuracy(is_correct: Sequence[Sequence[bool]]) -> float:
  """Expected accuracy of picking a choice uniformly at random: mean over examples of correct / C."""
  return float(np.mean([sum(flags) / len(flags) for flags in is_correct]))


def _path_name(name: str) -> str:
  return re.sub(r"[^\w.+-]", "_", name)


RECORDS_DIR = "records"  # under the output folder: one record per (target, method), for resuming


def _record_path(records_dir: str, target: str, method: str) -> str:
  return os.path.join(records_dir, _path_name(target), _path_name(method) + ".json")


def _selection_dir(selections_dir: str, target: str, method: str) -> str:
  return os.path.join(selections_dir, _path_name(target), _path_name(method))


@dataclasses.dataclass
class Evaluator:
  """Everything the methods need: the backbone, its tokenizer, and (for retrieval) a library.

  Attributes:
    params, config: the frozen backbone (T0).
    tokenizer: `rospr_jax.tokenization.Tokenizer`.
    library: an opened `rospr_jax.library.store.Library` (retrieval methods only).
    embedder: the library's retriever (`rospr_jax.library.embed.Embedder`).
    num_queries, num_neighbors, num_prompts, top_k: Q, N, N' and K of DESIGN.md.
    batch_size, mesh: scoring batch size and optional device mesh.
    seed: query sampling seed.
    progress_bars: show a tqdm bar while each (target, method) is scored.
  """
  params: Any
  config: Any
  tokenizer: Any
  library: Any = None
  embedder: Any = None
  num_queries: int = 32
  num_neighbors: int = 10
  num_prompts: int = 3
  top_k: int = 10
  batch_size: int = 32
  mesh: Any = None
  seed: int = 0
  max_input_length: int = 1024
  progress_bars: bool = False

  def _score(self, examples: Sequence[RankExample], prompt, description: str | None = None
             ) -> list[np.ndarray]:
    return score_examples(self.params, self.config, examples, prompts=prompt, batch_size=self.batch_size,
                          max_input_length=self.max_input_length, mesh=self.mesh,
                          progress=description if self.progress_bars else None)

  def tokenize(self, target: Target) -> list[RankExample]:
    encode_in, encode_out = self.tokenizer.encode_input, self.tokenizer.encode_target
    return [RankExample(encode_in(text), [encode_out(c) for c in choices])
            for text, choices in zip(target.inputs, target.choices)]

  def _retrieval(self, target: Target) -> tuple[np.ndarray, Callable]:
    """Query embeddings [Q, D] and a memoized VAR rank classification for `target`."""
    from rospr_jax.library import sources as sources_lib
    from rospr_jax.retrieval import retrieve
    from rospr_jax.retrieval.select_cli import make_predict_choices
    if self.library is None or self.embedder is None:
      raise ValueError("Retrieval methods need a library and its retriever (LIBRARY_DIR and "
                       "RETRIEVER_CHECKPOINT).")
    picked = retrieve.sample_queries(len(target.inputs), self.num_queries, self.seed)
    queries = [sources_lib.Query(target.inputs[i], target.choices[i]) for i in picked]
    embeddings = self.embedder.embed_texts([q.text for q in queries], self.tokenizer.encode_input)
    predict = make_predict_choices(self.params, self.config, queries, self.library.prompts(),
                                   self.tokenizer, batch_size=self.batch_size)
    cache: dict[tuple[int, ...], Any] = {}

    def predict_choices(ids):
      key = tuple(int(i) for i in ids)
      if key not in cache:
        cache[key] = predict(list(key))
      return cache[key]

    predict_choices.num_choices = [len(q.choices) for q in queries]
    return embeddings, predict_choices

  def _resumed(self, targets: Sequence[Target], methods: Sequence[str],
               records_dir: str | None) -> dict[tuple[str, str], float]:
    """{(target, method): accuracy} of the pairs an earlier run already wrote to `records_dir`.

    Process 0 reads them and broadcasts the accuracies, so that on several hosts every process skips
    the same pairs (each scoring is a computation over all of them).
    """
    pairs = [(t.name, m) for t in targets for m in methods if m != CHANCE]
    accuracies = np.full(len(pairs), np.nan)
    if records_dir and paths.writes_outputs():
      for i, (target, method) in enumerate(pairs):
        path = _record_path(records_dir, target, method)
        if os.path.exists(path):
          with open(path) as f:
            accuracies[i] = json.load(f)["accuracy"]
    accuracies = paths.from_process_zero(accuracies)
    return {pair: float(a) for pair, a in zip(pairs, accuracies) if not np.isnan(a)}

  def evaluate(self, targets: Sequence[Target], methods: Sequence[str] = METHODS, *,
               selections_dir: str | None = None, records_dir: str | None = None,
               progress: Callable[[str], None] | None = None) -> tuple[list[dict], dict[str, dict]]:
    """Scores every target under every method.

    With `records_dir`, each (target, method) record is written there as soon as it is scored, and the
    pairs already there are not scored again (a killed run resumes; their selections are read back
    from `selections_dir`).

    Returns:
      records: one {"method", "dataset", "template", "target", "accuracy", "examples"} per pair;
      selections: {target name: {method: selection dict}} for the retrieval methods.
    """
    from rospr_jax.retrieval import retrieve
    unknown = [m for m in methods if m not in METHODS + (CHANCE,)]
    if unknown:
      raise ValueError(f"Unknown methods {unknown}; known: {list(METHODS + (CHANCE,))}.")
    records, selections = [], {}
    resumed = self._resumed(targets, methods, records_dir)
    for target in targets:
      examples = self.tokenize(target)
      retrieval = None
      for method in methods:
        prompt = None
        record = {"method": method, "dataset": target.dataset, "template": target.template,
                  "target": target.name, "examples": len(examples)}
        if method == CHANCE:
          records.append({**record, "accuracy": chance_accuracy(target.is_correct)})
          continue
        if (target.name, method) in resumed:
          records.append({**record, "accuracy": resumed[target.name, method]})
          if method != "T0" and selections_dir:
            chosen, _ = retrieve.load_selection(_selection_dir(selections_dir, target.name, method))
            selections.setdefault(target.name, {})[method] = chosen.to_dict()
          if progress:
            progress(f"{target.name} {method}: {100 * records[-1]['accuracy']:.2f}% (resumed)")
          continue
        if method != "T0":
          if retrieval is None:
            retrieval = self._retrieval(target)
          embeddings, predict_choices = retrieval
          chosen, prompt = retrieve.retrieve_prompt(
              self.library, embeddings, RULE_OF_METHOD[method], num_neighbors=self.num_neighbors,
              num_prompts=self.num_prompts, top_k=self.top_k, predict_choices=predict_choices,
              num_choices=predict_choices.num_choices, params={"target": target.name, "seed": self.seed})
          if selections_dir:
            where = _selection_dir(selections_dir, target.name, method)
            retrieve.save_selection(where, chosen, prompt)
            chosen, prompt = retrieve.load_selection(where)  # Evaluate exactly what was saved.
          selections.setdefault(target.name, {})[method] = chosen.to_dict()
        accuracy = accuracy_of(self._score(examples, prompt, f"{target.name} {method}"), target.is_correct)
        records.append({**record, "accuracy": accuracy})
        if records_dir and paths.writes_outputs():
          atomic.write_text(_record_path(records_dir, target.name, method), json.dumps(records[-1]))
        if progress:
          progress(f"{target.name} {method}: {100 * accuracy:.2f}% on {len(examples)} examples")
    return records, selections


def retrieval_frequencies(selections: dict[str, dict], method: str = "RoSPr") -> dict[str, dict[str, int]]:
  """{target: {source name: freq}} of one method's selections (for the retrieval heatmap)."""
  out = {}
  for target, by_method in selections.items():
    if method in by_method:
      record = by_method[method]
      names = record.get("names") or [str(c) for c in record["candidates"]]
      out[target] = {name: int(f) for name, f in zip(names, record["freqs"])}
  return out


# ---------------------------------------------------------------------------------------------------
# The gin-configured run.

TARGET_GROUPS = ("bigbench", "held_out")


def resolve_target_tasks(specs: Sequence[str], data_dir: str | None = None) -> list:
  """Target tasks from group names ("bigbench": the 14 BIG-bench tasks, "held_out": the 11 held-out
  datasets' original-task templates) and task names of either group."""
  from rospr_jax.data import archives, bigbench, prompted
  loaded: dict[str, list] = {}

  def group(name):
    if name not in loaded:
      loaded[name] = (prompted.bigbench_target_tasks(bigbench.BigBenchStore()) if name == "bigbench" else
                      prompted.held_out_target_tasks(archives.promptsource_templates_dir(), data_dir))
    return loaded[name]

  tasks = []
  for spec in specs:
    if spec in TARGET_GROUPS:
      tasks.extend(group(spec))
      continue
    matches = [t for g in TARGET_GROUPS for t in group(g) if t.name == spec]
    if not matches:
      raise ValueError(f"Unknown target {spec!r}: give {list(TARGET_GROUPS)} or a task name from "
                       "`rospr tasks`.")
    tasks.extend(matches)
  return tasks


def run(*, checkpoint: str, output_dir: str, targets: Sequence[str], methods: Sequence[str] = METHODS,
        library_dir: str | None = None, retriever_checkpoint: str | None = None,
        vocabulary: str | None = None, data_dir: str | None = None, split: str | None = None,
        max_examples: int | None = None, num_queries: int = 32, num_neighbors: int = 10,
        num_prompts: int = 3, top_k: int = 10, batch_size: int = 32, seed: int = 0,
        dtype: str = "float32", attention_impl: str = "einsum", num_partitions: int = 1,
        preamble: str = "") -> dict:
  """Evaluates `targets` with the backbone at `checkpoint` and writes the report to `output_dir`."""
  import jax
  import jax.numpy as jnp
  from flax import linen as nn
  from rospr_jax import tokenization
  from rospr_jax.eval import report
  from rospr_jax.model import T5, checkpoints, partitioning

  for what, path in [("output_dir", output_dir), ("library_dir", library_dir), ("data_dir", data_dir),
                     ("retriever_checkpoint", retriever_checkpoint), ("vocabulary", vocabulary)]:
    paths.require_local(path, what)  # before hours of work, not when the report is written
  compute_dtype = jnp.dtype(dtype)
  config, params = checkpoints.load_checkpoint(checkpoint, dtype=compute_dtype)
  config = config.replace(dtype=compute_dtype, attention_impl=attention_impl)
  mesh = None
  if jax.device_count() > 1:
    mesh = partitioning.make_mesh(num_partitions)
    boxed = jax.eval_shape(lambda: T5(config).init(jax.random.PRNGKey(0), jnp.ones((1, 4), jnp.int32),
                                                   jnp.ones((1, 4), jnp.int32))["params"])
    params = partitioning.shard_params(params, boxed, mesh)
  vocab_path = vocabulary or tokenization.find_sentencepiece_model(checkpoint)
  tokenizer = tokenization.Tokenizer(vocab_path)
  tokenizer.check_fits(config.vocab_size, f"the checkpoint {checkpoint}")
  evaluator = Evaluator(params=params, config=config, tokenizer=tokenizer, num_queries=num_queries,
                        num_neighbors=num_neighbors, num_prompts=num_prompts, top_k=top_k,
                        batch_size=batch_size, mesh=mesh, seed=seed, progress_bars=True)
  if any(m in RULE_OF_METHOD for m in methods):
    from rospr_jax.library import embed, store
    if not library_dir or not retriever_checkpoint:
      raise ValueError("Methods other than T0 need LIBRARY_DIR and RETRIEVER_CHECKPOINT.")
    evaluator.embedder = embed.load_embedder(retriever_checkpoint, mesh=embed.local_data_mesh())
    tokenizer.check_fits(evaluator.embedder.config.vocab_size, f"the retriever {retriever_checkpoint}")
    evaluator.library = store.Library.open(library_dir, retriever=evaluator.embedder.fingerprint,
                                           dim=evaluator.embedder.dim)
  task_list = resolve_target_tasks(targets, data_dir)
  target_list = [target_from_task(t, split, max_examples=max_examples, seed=seed) for t in task_list]
  settings = {"checkpoint": checkpoints.checkpoint_fingerprint(checkpoint),
              "vocabulary": os.path.abspath(vocab_path), "split": split, "max_examples": max_examples,
              "seed": seed, "dtype": compute_dtype.name, "attention_impl": attention_impl,
              "data_dir": data_dir and os.path.abspath(data_dir)}
  if evaluator.library is not None:
    settings.update(library=os.path.abspath(library_dir), retriever=evaluator.embedder.fingerprint,
                    num_queries=num_queries, num_neighbors=num_neighbors, num_prompts=num_prompts,
                    top_k=top_k)
  _check_resumable(output_dir, settings)
  logging.info("Evaluating %d targets x %d methods", len(target_list), len(methods))
  writes = paths.writes_outputs()  # every process scores (the mesh spans all hosts); one writes
  records, selections = evaluator.evaluate(
      target_list, methods, selections_dir=os.path.join(output_dir, "selections") if writes else None,
      records_dir=os.path.join(output_dir, RECORDS_DIR), progress=logging.info)
  if not writes:
    return report.summarize(records)
  retrieval = retrieval_frequencies(selections) if selections else None
  return report.write_report(output_dir, records, retrieval=retrieval, preamble=preamble,
                             extra={"selections": selections, "checkpoint": checkpoint,
                                    "library": library_dir, "split": split, "seed": seed})


def _check_resumable(output_dir: str, settings: dict) -> None:
  """Records settings in `<output_dir>/run.json`; refuses an output folder whose records were scored
  with other settings (they would be resumed into this run's report)."""
  path = os.path.join(output_dir, "run.json")
  records_dir = os.path.join(output_dir, RECORDS_DIR)
  problem = ""
  if paths.writes_outputs():
    if os.path.exists(path) and os.path.isdir(records_dir) and os.listdir(records_dir):
      with open(path) as f:
        earlier = json.load(f)
      differ = {k: (earlier.get(k), v) for k, v in settings.items() if earlier.get(k) != v}
      if differ:
        problem = (f"{output_dir} holds records scored with other settings ({differ}, as (then, now)); "
                   f"give another OUTPUT_DIR, or delete {records_dir} to start over.")
    else:
      atomic.write_text(path, json.dumps(settings, indent=1))
  if paths.from_process_zero(np.int32(bool(problem))):  # every process stops, not only process 0
    raise ValueError(problem or "process 0 refused the output folder")


def main(argv: list[str]) -> int:
  import sys
  import gin
  from rospr_jax import gin_cli
  args, bindings = gin_cli.parse_args(argv, "rospr evaluate", __doc__, "eval/bigbench_targets.gin")
  gin_cli.setup_logging(args.log_level)
  try:
    gin_cli.parse_gin(args.gin_file, bindings, [p for p in args.gin_search_paths.split(",") if p])
  except (OSError, SyntaxError, ValueError) as e:
    gin.clear_config()
    print(f"rospr evaluate: gin config error: {e}", file=sys.stderr)
    return 2
  try:
    summary = gin.get_configurable(run)()
    if paths.writes_outputs():
      gin_cli.write_operative_config(gin.query_parameter("%OUTPUT_DIR"))
  except (OSError, ValueError) as e:
    print(f"rospr evaluate: error: {e}", file=sys.stderr)
    return 2
  finally:
    gin.clear_config()
  for method in summary["methods"]:
    print(f"{method}: average accuracy {100 * summary['average_mean'][method]:.2f}%")
  return 0
