"""Which datasets RoSPr uses, as T0 defined them (bigscience-workshop/t-zero, t0/datasets.csv).

- Sources: T0's training mixture ("d4_train", `do_train == BASE`): 38 (dataset, subset) pairs, every
  promptsource template of each.
- Held-out targets: T0's evaluation datasets (`do_eval == BASE`) without the bias/fairness sets: RTE, CB,
  ANLI R1/R2/R3, COPA, HellaSwag, StoryCloze, WinoGrande, WSC, WiC, their `original_task` templates,
  rank classification on the validation split (ANLI's rounds split as T0 did).
- BIG-bench targets: the 14 tasks T0 and RoSPr report.

T0 capped its mixture per dataset: a dataset with more than 500k training examples contributes
500k / (number of its templates) per template, any other dataset its full size per template; the
mixing rate of a task is that cap. T0 left `gigaword_summarize_` out (a broken cache); promptsource
0.2.3 no longer has that template, so all 313 templates of the 38 datasets are in the mixture.
"""

from __future__ import annotations

import dataclasses
import re

MAX_EXAMPLES_PER_DATASET = 500_000
T0_MIXTURE_EXCLUDED_TASKS = ("gigaword_summarize_",)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """A Hugging Face dataset (and subset) as promptsource names it.

  Attributes:
    name: Hugging Face dataset name (also the promptsource templates folder).
    subset: configuration name, or None.
    train_size: training examples, as T0 recorded them (for the mixture cap).
    splits: task split -> the dataset's split name (ANLI's rounds live in one dataset).
    task_suffix: appended to task names (ANLI: "_r1" ...).
  """

  name: str
  subset: str | None = None
  train_size: int = 0
  splits: tuple[tuple[str, str], ...] = (("train", "train"), ("validation", "validation"), ("test", "test"))
  task_suffix: str = ""

  @property
  def key(self) -> str:
    """`name[/subset]`: the folder of its templates and of its local data files."""
    return f"{self.name}/{self.subset}" if self.subset else self.name

  @property
  def label(self) -> str:
    """A short name for reports: `name[/subset]` plus the suffix (ANLI rounds)."""
    return self.key + (f" {self.task_suffix.strip('_')}" if self.task_suffix else "")

  def source_split(self, split: str) -> str:
    mapping = dict(self.splits)
    if split not in mapping:
      raise ValueError(f"{self.label} has no split {split!r} (it has {sorted(mapping)})")
    return mapping[split]

  def mixture_cap(self, num_templates: int) -> int:
    """T0's per-task cap (its mixing rate) for a dataset with `num_templates` templates."""
    if self.train_size > MAX_EXAMPLES_PER_DATASET:
      return MAX_EXAMPLES_PER_DATASET // num_templates
    return self.train_size


def _d(name, subset=None, train_size=0, **kw) -> DatasetSpec:
  return DatasetSpec(name, subset, train_size, **kw)


# T0's training datasets, in the order of t0/datasets.csv.
T0_TRAIN_DATASETS: tuple[DatasetSpec, ...] = (
    _d("glue", "mrpc", 3668), _d("glue", "qqp", 363846), _d("paws", "labeled_final", 49401),
    _d("kilt_tasks", "hotpotqa", 88869), _d("wiki_qa", None, 20360),
    _d("adversarial_qa", "dbidaf", 10000), _d("adversarial_qa", "dbert", 10000),
    _d("adversarial_qa", "droberta", 10000), _d("duorc", "SelfRC", 60721), _d("duorc", "ParaphraseRC", 69524),
    _d("ropes", None, 10924), _d("quoref", None, 19399),
    _d("cos_e", "v1.11", 9741), _d("cosmos_qa", None, 25262), _d("dream", None, 6116), _d("qasc", None, 8134),
    _d("quail", None, 10246), _d("quarel", None, 1941), _d("quartz", None, 2696), _d("sciq", None, 11679),
    _d("social_i_qa", None, 33410), _d("wiki_hop", "original", 43738), _d("wiqa", None, 29808),
    _d("amazon_polarity", None, 3600000), _d("app_reviews", None, 288065), _d("imdb", None, 25000),
    _d("rotten_tomatoes", None, 8530), _d("yelp_review_full", None, 650000),
    _d("common_gen", None, 67389), _d("wiki_bio", None, 582659),
    _d("cnn_dailymail", "3.0.0", 287113), _d("gigaword", None, 3803957), _d("multi_news", None, 44972),
    _d("samsum", None, 14732), _d("xsum", None, 204045),
    _d("ag_news", None, 120000), _d("dbpedia_14", None, 560000), _d("trec", None, 5452),
)


def _anli(round_: str) -> DatasetSpec:
  return _d("anli", None, 0, task_suffix=f"_{round_}",
            splits=(("train", f"train_{round_}"), ("validation", f"dev_{round_}"), ("test", f"test_{round_}")))


# Held-out datasets (T0's evaluation set); each is evaluated on "validation".
HELD_OUT_DATASETS: tuple[DatasetSpec, ...] = (
    _d("super_glue", "rte"), _d("super_glue", "cb"), _anli("r1"), _anli("r2"), _anli("r3"),
    _d("super_glue", "copa"), _d("hellaswag"),
    _d("story_cloze", "2016", splits=(("validation", "validation"), ("test", "test"))),
    _d("winogrande", "winogrande_xl"), _d("super_glue", "wsc.fixed"), _d("super_glue", "wic"),
)
HELD_OUT_EVAL_SPLIT = "validation"

# BIG-bench tasks T0 and RoSPr evaluate on ("syllogisms" is formal_fallacies_syllogisms_negation).
BIGBENCH_TARGETS: tuple[str, ...] = (
    "code_line_description", "conceptual_combinations", "hindu_knowledge", "known_unknowns",
    "language_identification", "logic_grid_puzzle", "logical_deduction", "misconceptions",
    "movie_dialog_same_or_different", "novel_concepts", "strategyqa", "formal_fallacies_syllogisms_negation",
    "vitaminc_fact_verification", "winowhy",
)


def task_clean(text: str) -> str:
  """T0's rule for task names: runs of characters other than word characters, '.' and '_' become '_'."""
  return re.sub(r"[^\w\d\._]+", "_", text)


def template_task_name(spec: DatasetSpec, template_name: str) -> str:
  """`<dataset>_<subset>_<template>` (+ the ANLI round), as T0 and P3 name their tasks."""
  base = spec.name + (f"_{spec.subset}_" if spec.subset is not None else "_") + template_name
  return task_clean(base) + spec.task_suffix


def bigbench_task_name(task: str) -> str:
  return task_clean(f"bigbench_{task}")


SCORE_EVAL_SUFFIX = "_score_eval"
