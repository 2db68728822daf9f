"""promptsource templates: read from templates.yaml, rendered exactly as promptsource 0.2.3 renders them.

A templates.yaml file (tags `!Template`, `!TemplateMetadata`) is read by a YAML loader that builds
plain frozen dataclasses; promptsource itself is not imported (it requires Python < 3.10).

Rendering follows promptsource's `Template.apply`:
- one jinja2 Environment with the default (lenient) `Undefined`, the `zip` global and the filters
  `highlight`, `choice` (a random element) and `most_frequent`;
- `answer_choices` is the answer-choices template rendered on the example, split on "|||", each part
  stripped, and passed to the main template as the variable `answer_choices`;
- with `truncate=True` every `}}` becomes ` | string | truncate(2048) }}` (a textual replacement of the
  template source, as promptsource does);
- "|||" inside string fields is protected during rendering and restored afterwards;
- the output is split on "|||" and each part stripped.

Beyond promptsource: `render` checks that every field the template names exists in the example and
is not null, that a label it indexes the answer choices with is an index into them, and that a field
it compares with -1 is not -1 (Hugging Face's unlabeled example); each is a `DataError` naming the
field, where jinja would silently print nothing, "None" or an empty target. It applies T0's rules
(hyphens in field names become underscores; an output that is not exactly input ||| target, or whose
input or target is empty, is dropped) and `RenderReport` counts every drop and error per template.
The `choice` filter draws from a `random.Random` that the caller seeds per example, so a pipeline is
reproducible; without one it uses the `random` module, as promptsource does.
"""

from __future__ import annotations

import collections
import contextvars
import dataclasses
import functools
import os
import pathlib
import random
from typing import Any, Container, Iterable, Mapping, Sequence

import jinja2
from jinja2 import meta
import yaml

from rospr_jax.data import checks

TEXT_VAR_LENGTH = 2048
PIPE_PROTECTOR = "3ed2dface8203c4c9dfb1a5dc58e41e0"
SEPARATOR = "|||"
# Users whose folders under templates/ hold datasets ("Zaid/coqa_expanded"), as in promptsource.
INCLUDED_USERS = ("Zaid", "craffel")

_RNG: contextvars.ContextVar[random.Random | None] = contextvars.ContextVar("rospr_template_rng", default=None)


class TemplateError(ValueError):
  """A template that cannot be read, or cannot be applied to an example."""



# ---------------------------------------------------------------------------------------------------
# The jinja environment (promptsource's, with the random source made injectable).


def _highlight(text):
  return "<span style='color: #F08080'>" + text + "</span>"


def _choice(choices):
  rng = _RNG.get()
  return (rng or random).choice(choices)


def _most_frequent(items):
  """The items that occur most often (all of them on a tie), in first-seen order; None if empty."""
  if not items:
    return None
  counts = collections.Counter(items).most_common()
  top = counts[0][1]
  return [item for item, count in counts if count == top]


def _make_env(undefined: type[jinja2.Undefined] = jinja2.Undefined) -> jinja2.Environment:
  env = jinja2.Environment(loader=jinja2.BaseLoader, undefined=undefined)
  env.globals.update(zip=zip)
  env.filters["highlight"] = _highlight
  env.filters["choice"] = _choice
  env.filters["most_frequent"] = _most_frequent
  return env


ENV = _make_env()
# Strict twin: any use of a missing field or attribute raises (for checking example records).
STRICT_ENV = _make_env(jinja2.StrictUndefined)


@functools.lru_cache(maxsize=8192)
def _compile(source: str, strict: bool = False) -> jinja2.Template:
  return (STRICT_ENV if strict else ENV).from_string(source)


@functools.lru_cache(maxsize=8192)
def _undeclared(source: str) -> frozenset[str]:
  return frozenset(meta.find_undeclared_variables(ENV.parse(source)))



def _escape_pipe(example: Mapping[str, Any]) -> dict[str, Any]:
  return {k: v.replace(SEPARATOR, PIPE_PROTECTOR) if isinstance(v, str) else v for k, v in example.items()}


def _unescape_pipe(text: str) -> str:
  return text.replace(PIPE_PROTECTOR, SEPARATOR)


# ---------------------------------------------------------------------------------------------------
# Templates.


@dataclasses.dataclass(frozen=True)
class TemplateMetadata:
  original_task: bool | None = None
  choices_in_prompt: bool | None = None
  metrics: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True)
class Template:
  """One promptsource template of one dataset (or dataset subset)."""

  id: str
  name: str
  jinja: str
  reference: str = ""
  metadata: TemplateMetadata = TemplateMetadata()
  answer_choices: str | None = None
  dataset: str = ""
  subset: str | None = None

  @property
  def where(self) -> str:
    """`dataset[/subset]:template name`, for messages."""
    return f"{self.dataset}{'/' + self.subset if self.subset else ''}:{self.name!r}"

  def answer_choices_list(self, example: Mapping[str, Any], strict: bool = False) -> list[str] | None:
    """The answer choices rendered on `example` ([C] strings), or None for an open-ended template."""
    if self.answer_choices is None:
      return None
    rendered = _compile(self.answer_choices, strict).render(**_escape_pipe(example))
    return [_unescape_pipe(choice.strip()) for choice in rendered.split(SEPARATOR)]

  def fixed_answer_choices_list(self) -> list[str] | None:
    """The answer choices if they do not depend on the example, else None."""
    if self.answer_choices is None or _undeclared(self.answer_choices):
      return None
    return [choice.strip() for choice in _compile(self.answer_choices).render().split(SEPARATOR)]

  def apply(self, example: Mapping[str, Any], truncate: bool = True, highlight_variables: bool = False,
            rng: random.Random | None = None, strict: bool = False) -> list[str]:
    """Renders the template on `example` as promptsource's `Template.apply` does.

    Args:
      strict: raise on any use of a missing field or attribute (jinja's StrictUndefined) instead of
        printing nothing as promptsource does; for checking that records have every field.

    Returns:
      The rendered text split on "|||", each part stripped (usually [input, target]).
    """
    return self.apply_with_choices(example, truncate, highlight_variables, rng, strict)[0]

  def apply_with_choices(self, example: Mapping[str, Any], truncate: bool = True,
                         highlight_variables: bool = False, rng: random.Random | None = None,
                         strict: bool = False, guard_choices: bool = False
                         ) -> tuple[list[str], list[str] | None]:
    """`apply`, also returning the answer choices it rendered (one rendering, one set of draws).

    With `guard_choices`, indexing `answer_choices` with a value that is no index into them raises
    `checks.ChoiceIndexError` instead of printing nothing."""
    source = self.jinja
    if truncate:
      source = source.replace("}}", f" | string | truncate({TEXT_VAR_LENGTH}) }}}}")
    if highlight_variables:
      source = source.replace("}}", " | highlight }}")
    protected = _escape_pipe(example)
    if "answer_choices" in protected:
      raise TemplateError(f"{self.where}: the example has the reserved field 'answer_choices'")
    token = _RNG.set(rng)
    try:
      choices = self.answer_choices_list(example, strict)
      protected["answer_choices"] = checks.Choices(choices) if guard_choices and choices is not None else choices
      rendered = _compile(source, strict).render(**protected)
    finally:
      _RNG.reset(token)
    return [_unescape_pipe(part).strip() for part in rendered.split(SEPARATOR)], choices

  def required_fields(self) -> frozenset[str]:
    """Top-level example fields the template (or its answer choices) reads."""
    names = set(_undeclared(self.jinja))
    if self.answer_choices is not None:
      names |= _undeclared(self.answer_choices)
    return frozenset(names - {"answer_choices"} - set(ENV.globals))


# ---------------------------------------------------------------------------------------------------
# Rendering for a data pipeline (T0's rules), with counted failures.


@dataclasses.dataclass(frozen=True)
class Rendered:
  """One example rendered by one template."""

  inputs: str
  targets: str
  answer_choices: tuple[str, ...] | None


def remove_hyphens(example: Mapping[str, Any]) -> dict[str, Any]:
  """T0 / promptsource renamed fields such as `label-coarse` to `label_coarse` before rendering."""
  return {k.replace("-", "_"): v for k, v in example.items()}


def render(template: Template, example: Mapping[str, Any], rng: random.Random | None = None,
           where: str = "") -> Rendered | None:
  """Renders one example as T0's SeqIO tasks did.

  Returns:
    The rendered example, or None when T0 would drop it (not exactly one "|||", or an empty input or
    target: promptsource templates print nothing for examples they do not apply to, such as COPA's
    "cause" templates on an "effect" question).

  Raises:
    DataError: the example's data is at fault (`check_example`), or the template indexes its answer
      choices with a value that is no index into them (a label 5 of two choices, "entailment").
    TemplateError: jinja fails otherwise; the message names the template, the example (`where`) and
      the jinja error.
  """
  example = check_example(template, example, where)
  try:
    parts, choices = template.apply_with_choices(example, rng=rng, guard_choices=True)
  except TemplateError:
    raise
  except checks.ChoiceIndexError as e:
    raise checks.choice_index_error(f"{template.where}{where}", example, template.required_fields(),
                                    e.index, template.answer_choices_list(example) or []) from None
  except Exception as e:  # jinja raises TypeError, IndexError, UndefinedError, ...
    raise TemplateError(f"{template.where}{where}: rendering failed: {type(e).__name__}: {e}") from e
  if len(parts) != 2 or not parts[0] or not parts[1]:
    return None
  return Rendered(parts[0], parts[1], tuple(choices) if choices is not None else None)


def check_example(template: Template, example: Mapping[str, Any], where: str = "") -> dict[str, Any]:
  """The example with T0's field names, checked for what the template reads (`checks.check_fields`)."""
  if not isinstance(example, Mapping):
    raise TemplateError(f"{template.where}{where}: an example must be a mapping of fields, "
                        f"got {type(example).__name__}")
  example = remove_hyphens(example)
  checks.check_fields(f"{template.where}{where}", example, template.required_fields(), template.jinja)
  return example


@dataclasses.dataclass
class RenderReport:
  """Counts per template: rendered, dropped (T0's empty-output rule), failed (with the first messages)."""

  rendered: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  dropped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  failed: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  messages: dict = dataclasses.field(default_factory=dict)
  max_messages: int = 3

  def add_failure(self, key: str, message: str) -> None:
    self.failed[key] += 1
    kept = self.messages.setdefault(key, [])
    if len(kept) < self.max_messages:
      kept.append(message)

  @property
  def num_failed(self) -> int:
    return sum(self.failed.values())

  def summary(self) -> str:
    keys = sorted(set(self.rendered) | set(self.dropped) | set(self.failed))
    lines = [f"{k}: {self.rendered[k]} rendered, {self.dropped[k]} dropped (empty), {self.failed[k]} failed"
             for k in keys]
    for k in sorted(self.messages):
      lines += [f"  {k}: {m}" for m in self.messages[k]]
    return "\n".join(lines)


def render_all(template: Template, examples: Iterable[Mapping[str, Any]], report: RenderReport,
               seed: int = 0, positions: Container[int] | None = None,
               refuse: bool = False) -> Iterable[tuple[int, Rendered]]:
  """Renders examples in order, yielding (example index, rendered); drops and failures go to `report`.

  The `choice` filter of example i draws from `random.Random(f"{seed}:{template.id}:{i}")`, so the
  output does not depend on sharding or on which examples came before. With `positions`, only the
  examples at those indices are rendered (the others are skipped unrendered and uncounted). With
  `refuse`, an example that fails (a `DataError` or a jinja error) raises instead of being counted.
  """
  key = template.where
  for i, example in enumerate(examples):
    if positions is not None and i not in positions:
      continue
    rng = random.Random(f"{seed}:{template.id}:{i}")
    try:
      out = render(template, example, rng=rng, where=f" example {i}")
    except (TemplateError, checks.DataError) as e:
      if refuse:
        raise
      report.add_failure(key, str(e))
      continue
    if out is None:
      report.dropped[key] += 1
      continue
    report.rendered[key] += 1
    yield i, out


# ---------------------------------------------------------------------------------------------------
# Reading templates.yaml.


def _construct(kind: str):
  def construct(loader, node: yaml.Node) -> dict:
    if not isinstance(node, yaml.MappingNode):
      raise yaml.constructor.ConstructorError(None, None, f"{kind} must be a mapping", node.start_mark)
    value = loader.construct_mapping(node, deep=True)
    value["__kind__"] = kind
    return value
  return construct


class _TemplatesLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
  """SafeLoader that reads promptsource's two tags as tagged mappings."""


_TemplatesLoader.add_constructor("!Template", _construct("Template"))
_TemplatesLoader.add_constructor("!TemplateMetadata", _construct("TemplateMetadata"))


def _metadata(raw: Any, where: str) -> TemplateMetadata:
  if raw is None:
    return TemplateMetadata()
  if not isinstance(raw, dict) or raw.get("__kind__") != "TemplateMetadata":
    raise TemplateError(f"{where}: 'metadata' must be a !TemplateMetadata mapping")
  metrics = raw.get("metrics")
  return TemplateMetadata(original_task=raw.get("original_task"), choices_in_prompt=raw.get("choices_in_prompt"),
                          metrics=tuple(metrics) if metrics is not None else None)


def parse_templates_yaml(text: str, source: str = "<string>", dataset: str | None = None,
                         subset: str | None = None) -> dict[str, Template]:
  """Parses a templates.yaml document into {template name: Template} (file order).

  Raises:
    TemplateError: malformed YAML, a template missing `name` or `jinja`, a duplicate name, or a jinja
      syntax error; the message names `source` and the template.
  """
  try:
    doc = yaml.load(text, Loader=_TemplatesLoader)
  except yaml.YAMLError as e:
    raise TemplateError(f"{source}: malformed YAML: {e}") from e
  if not isinstance(doc, dict) or not isinstance(doc.get("templates"), dict):
    raise TemplateError(f"{source}: expected a mapping with a 'templates' mapping at the top level")
  dataset = dataset if dataset is not None else str(doc.get("dataset", ""))
  if subset is None and doc.get("subset") is not None:
    subset = str(doc["subset"])
  out: dict[str, Template] = {}
  for key, raw in doc["templates"].items():
    where = f"{source}: template {key}"
    if not isinstance(raw, dict) or raw.get("__kind__") != "Template":
      raise TemplateError(f"{where}: expected a !Template mapping")
    for field in ("name", "jinja"):
      if not isinstance(raw.get(field), str):
        raise TemplateError(f"{where}: missing or non-string '{field}'")
    answer_choices = raw.get("answer_choices")
    if answer_choices is not None and not isinstance(answer_choices, str):
      raise TemplateError(f"{where}: 'answer_choices' must be a string or null")
    template = Template(id=str(raw.get("id", key)), name=raw["name"], jinja=raw["jinja"],
                        reference=str(raw.get("reference") or ""), metadata=_metadata(raw.get("metadata"), where),
                        answer_choices=answer_choices, dataset=dataset, subset=subset)
    for part in (template.jinja, template.answer_choices):
      if part is None:
        continue
      try:
        _compile(part)
      except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"{where} ({template.name!r}): jinja syntax error: {e}") from e
    if template.name in out:
      raise TemplateError(f"{source}: two templates are named {template.name!r}")
    out[template.name] = template
  return out


def dataset_folder(templates_dir: os.PathLike, dataset: str, subset: str | None = None) -> pathlib.Path:
  folder = pathlib.Path(templates_dir) / dataset
  return folder / subset if subset else folder


def load_dataset_templates(templates_dir: os.PathLike, dataset: str,
                           subset: str | None = None) -> dict[str, Template]:
  """Reads `<templates_dir>/<dataset>[/<subset>]/templates.yaml`.

  Raises:
    FileNotFoundError: no such file (the message names it).
    TemplateError: see `parse_templates_yaml`.
  """
  path = dataset_folder(templates_dir, dataset, subset) / "templates.yaml"
  if not path.exists():
    raise FileNotFoundError(f"no promptsource templates for {dataset}{'/' + subset if subset else ''}: "
                            f"{path} does not exist")
  return parse_templates_yaml(path.read_text(encoding="utf-8"), source=str(path), dataset=dataset, subset=subset)


def list_template_datasets(templates_dir: os.PathLike) -> list[tuple[str, str | None]]:
  """Every (dataset, subset) with a templates.yaml, keyed by folder names as promptsource keys them."""
  root = pathlib.Path(templates_dir)
  keys = []
  for path in sorted(root.rglob("templates.yaml")):
    parts = path.relative_to(root).parts[:-1]
    if parts[0] in INCLUDED_USERS:
      parts = ("/".join(parts[:2]),) + parts[2:]
    if len(parts) == 1:
      keys.append((parts[0], None))
    elif len(parts) == 2:
      keys.append((parts[0], parts[1]))
  return keys


def original_task_templates(templates: Mapping[str, Template]) -> list[Template]:
  """Templates marked `original_task: true`, sorted by name (T0's evaluation prompts)."""
  return [templates[k] for k in sorted(templates) if templates[k].metadata.original_task]


def sorted_templates(templates: Mapping[str, Template]) -> list[Template]:
  return [templates[k] for k in sorted(templates)]


def choices_or_error(template: Template, rendered: Rendered, where: str = "") -> Sequence[str]:
  """The answer choices of a rendered example, or a TemplateError for rank classification."""
  if not rendered.answer_choices:
    raise TemplateError(f"{template.where}{where}: the example has no answer choices; rank "
                        "classification needs a template with answer_choices")
  return rendered.answer_choices
