"""How prompts start: one gin-configurable class per initializer, chosen by PROMPT_INIT.

A run binds `trainer.train.prompt_init = %PROMPT_INIT` (gin/prompt_tuning/base.gin), and PROMPT_INIT is

- a registered name, which selects that initializer as gin configures it: `PROMPT_INIT =
  'sampled_vocab'` is `SampledVocab()` with the bindings of `prompt_init.SampledVocab`; or
- a gin reference with its own bindings, as google-research/prompt-tuning's `configs/prompts/*.gin`
  bind theirs: `PROMPT_INIT = @prompt_init.SampledVocab()` and `prompt_init.SampledVocab.population_size
  = 2000` (a scoped `@small/prompt_init.SampledVocab()` keeps its bindings apart).

    'random_uniform'  RandomUniform(scale)              U[-scale, scale)
    'sampled_vocab'   SampledVocab(population_size)     rows of the population_size most frequent tokens'
                                                        embeddings (`prompts.from_sample_of_embeddings`)
    'class_labels'    ClassLabels(labels, vocabulary,   row i: the mean sub-token embedding of class label
                      population_size)                  i, then sampled vocabulary; the labels are `labels`
                                                        tokenized with `vocabulary`, or else each source's
                                                        most frequent training targets
    'file'            FromFile(file)                    a [P, H] or [S, P, H] `.npy`, or a prompt export
                                                        whose rows are taken by source name

Every initializer is a `PromptInitializer`: `initializers(embeddings [V, H], data, length)` gives
`initializer_for(source_id)`, the `prompts` closure `init(rng, (P, H))` of each source, and `record()`
what the export manifest keeps as `prompt_init`: the method's name and every setting, those the method
does not use at their defaults (the layout exports have always had). The initializer is not a resume
fact: a resumed run starts from its checkpoint whatever PROMPT_INIT says. A bad setting is refused on
creation in one line naming its gin binding; an unknown name in one line naming PROMPT_INIT.

Vocabulary: S sources, P prompt length, H model dim, V vocabulary.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
from typing import Any, Callable, ClassVar, Sequence

import gin
import numpy as np

from rospr_jax.config_fields import (POSITIVE, check_fields, names, optional, path, positive_number, problem,
                                     refuse, setting)
from rospr_jax.model import EOS_ID
from rospr_jax.prompt import export as export_lib
from rospr_jax.prompt import prompts as prompts_lib
from rospr_jax.prompt.input_pipeline import SourceExamples
from rospr_jax.registry import Registry

InitializerFor = Callable[[int], prompts_lib.Initializer]  # source id -> init(rng, (P, H)) -> [P, H]

DEFAULT = "random_uniform"
# Every setting an export manifest's `prompt_init` holds, at the defaults a method that lacks it records.
_RECORD_DEFAULTS = {"scale": 0.5, "population_size": prompts_lib.DEFAULT_POPULATION, "class_labels": None,
                    "vocabulary": None, "file": None}


class PromptInitializer(abc.ABC):
  """What PROMPT_INIT gives: subclasses are frozen dataclasses registered under `NAME` (`register`)."""
  NAME: ClassVar[str]
  RECORDED_AS: ClassVar[dict[str, str]] = {}  # field -> its key in `record()`, where they differ

  @abc.abstractmethod
  def initializers(self, embeddings, data: SourceExamples, length: int) -> InitializerFor:
    """`initializer_for(source_id)`; `embeddings` [V, H] is the backbone's token table, `length` P."""

  def record(self) -> dict:
    """{"method": NAME, "scale", "population_size", "class_labels", "vocabulary", "file"}: the export
    manifest's `prompt_init`, the settings this method lacks at their defaults."""
    settings = {self.RECORDED_AS.get(f.name, f.name): getattr(self, f.name) for f in dataclasses.fields(self)}
    record = {"method": self.NAME, **_RECORD_DEFAULTS}
    record.update((key, list(value) if isinstance(value, tuple) else value) for key, value in settings.items())
    return record


INITIALIZERS = Registry("prompt initializer", ("NAME",))
def register(cls: type[PromptInitializer]) -> type[PromptInitializer]:
  """Makes `cls` selectable as `PROMPT_INIT = cls.NAME` (a NAME not registered yet)."""
  return INITIALIZERS.add(cls)


def _known_name(value: Any) -> str | None:
  ok = isinstance(value, str) and value in INITIALIZERS
  return None if ok else (f"one of {', '.join(map(repr, INITIALIZERS))}, or a gin reference such as "
                          "@prompt_init.SampledVocab()")


def resolve(value: PromptInitializer | str | None) -> PromptInitializer:
  """The initializer `trainer.train.prompt_init` (PROMPT_INIT) names: an initializer as given, a
  registered name as gin configures its class, None as 'random_uniform'; anything else is refused."""
  if isinstance(value, PromptInitializer):
    return value
  value = DEFAULT if value is None else value
  refuse([problem("prompt_init", "PROMPT_INIT", value, _known_name)])
  return INITIALIZERS[value]()


@register
@gin.configurable
@dataclasses.dataclass(frozen=True)
class RandomUniform(PromptInitializer):
  """Every entry from U[-scale, scale) (Lester et al. use scale 0.5)."""
  NAME: ClassVar[str] = "random_uniform"
  scale: float = setting("prompt_init.RandomUniform.scale", 0.5, positive_number)

  def __post_init__(self):
    check_fields(self)

  def initializers(self, embeddings, data: SourceExamples, length: int) -> InitializerFor:
    init = prompts_lib.random_uniform(self.scale)
    return lambda s: init


@register
@gin.configurable
@dataclasses.dataclass(frozen=True)
class SampledVocab(PromptInitializer):
  """Rows drawn from the embeddings [V, H] of the `population_size` most frequent tokens (the first ids:
  SentencePiece orders its vocabulary by frequency)."""
  NAME: ClassVar[str] = "sampled_vocab"
  population_size: int = setting("prompt_init.SampledVocab.population_size", prompts_lib.DEFAULT_POPULATION,
                                 POSITIVE)

  def __post_init__(self):
    check_fields(self)

  def initializers(self, embeddings, data: SourceExamples, length: int) -> InitializerFor:
    vocab = prompts_lib.from_sample_of_embeddings(np.asarray(embeddings, np.float32), self.population_size)
    return lambda s: vocab


def most_frequent_targets(data: SourceExamples, source_id: int, limit: int) -> list[list[int]]:
  """The `limit` most frequent target sequences of a source (EOS and padding removed), ties by first
  appearance: the class labels of a classification source."""
  counts: collections.Counter = collections.Counter()
  for ex in data.examples:
    if ex.source_id == source_id:
      label = tuple(int(t) for t in ex.targets if int(t) not in (0, EOS_ID))
      if label:
        counts[label] += 1
  return [list(label) for label, _ in counts.most_common(limit)]


@register
@gin.configurable
@dataclasses.dataclass(frozen=True)
class ClassLabels(PromptInitializer):
  """Row i = the mean sub-token embedding of class label i; the rows after the labels are sampled from
  the `population_size` most frequent tokens. The labels are the `labels` texts tokenized with the
  SentencePiece model `vocabulary` (the same for every source), or else each source's P most frequent
  training targets."""
  NAME: ClassVar[str] = "class_labels"
  RECORDED_AS: ClassVar[dict[str, str]] = {"labels": "class_labels"}
  labels: Sequence[str] | None = setting("prompt_init.ClassLabels.labels", None,
                                         optional(names("['yes', 'no']")))
  vocabulary: str | None = setting("prompt_init.ClassLabels.vocabulary", None, optional(path))
  population_size: int = setting("prompt_init.ClassLabels.population_size", prompts_lib.DEFAULT_POPULATION,
                                 POSITIVE)

  def __post_init__(self):
    check_fields(self)
    if self.labels is not None and self.vocabulary is None:
      raise ValueError("prompt_init.ClassLabels.labels are texts: bind prompt_init.ClassLabels.vocabulary "
                       "to the SentencePiece model that tokenizes them.")

  def initializers(self, embeddings, data: SourceExamples, length: int) -> InitializerFor:
    embeddings = np.asarray(embeddings, np.float32)
    vocab = prompts_lib.from_sample_of_embeddings(embeddings, self.population_size)
    if self.labels is None:
      return lambda s: prompts_lib.from_class_labels(embeddings, most_frequent_targets(data, s, length), vocab)
    from rospr_jax.storage import copies  # pylint: disable=g-import-not-at-top
    from rospr_jax.tokenization import Tokenizer  # pylint: disable=g-import-not-at-top
    tokenizer = Tokenizer(copies.local_copy(self.vocabulary, "prompt_init.ClassLabels.vocabulary"))
    shared = prompts_lib.from_class_labels(embeddings, [tokenizer.encode_input(t) for t in self.labels], vocab)
    return lambda s: shared


@register
@gin.configurable
@dataclasses.dataclass(frozen=True)
class FromFile(PromptInitializer):
  """Prompts read from `file`: a [P, H] `.npy` (every source starts from it), an [S, P, H] one (row s for
  source s), or a prompt export (each source's row by name)."""
  NAME: ClassVar[str] = "file"
  file: str | None = setting("prompt_init.FromFile.file", None, path)

  def __post_init__(self):
    check_fields(self)

  def initializers(self, embeddings, data: SourceExamples, length: int) -> InitializerFor:
    local = export_lib.local_copy(self.file, "prompt_init.FromFile.file")  # a URL's checked local copy
    table = export_lib.load_prompt_table(local, "prompt_init.FromFile.file")
    value = table.prompts
    if table.names is not None:
      rows = {name: value[i] for i, name in enumerate(table.names)}
      missing = [n for n in data.names if n not in rows]
      if missing:
        raise ValueError(f"{self.file}: no prompt for sources {missing}.")
      return lambda s: prompts_lib.from_array(rows[data.names[s]])
    if value.ndim == 2:
      return lambda s: prompts_lib.from_file(local)
    if value.ndim == 3 and value.shape[0] == len(data.names):
      return lambda s: prompts_lib.from_array(value[s])
    raise ValueError(f"{self.file}: shape {value.shape} is neither [P, H] nor [S, P, H] with "
                     f"S = {len(data.names)} sources.")
