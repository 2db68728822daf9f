"""The SentencePiece vocabulary: T0's (a path the user gives) or a small one trained offline.

`vocabulary_path()` is `$ROSPR_VOCAB` when set (point it at T5's / T0's `spiece.model`), else the
offline vocabulary. `offline_vocabulary_path()` returns the offline model, training it once into
`<cache>/vocab/` if it is absent: a unigram SentencePiece model with T5's special ids (pad 0, eos 1,
unk 2, no bos) and 3000 pieces, trained on the offline corpus:

- the text of every promptsource template of the T0 source and held-out datasets, with the jinja
  markup removed (the P3 examples themselves are not shipped in any package), and their fixed answer
  choices;
- BIG-bench: inputs and answer choices of up to 200 examples of every multiple-choice JSON task,
  except the synthetic tasks whose task.json exceeds 16 MB (pixel and geometry encodings), the 14
  held-out tasks always included.

The model is written under a temporary name and renamed, next to a manifest (corpus sha256, size,
SentencePiece version); no TensorFlow or SeqIO is imported here, so the model side can use it.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import tempfile
import zipfile
from typing import Iterable, Iterator

from rospr_jax import artifacts
from rospr_jax.data import archives

OFFLINE_VOCAB_SIZE = 3000
OFFLINE_VOCAB_NAME = f"rospr_offline_unigram_{OFFLINE_VOCAB_SIZE}"
MAX_EXAMPLES_PER_TASK = 200
MAX_TASK_BYTES = 16 * 2**20
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2

_JINJA_MARKUP = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)


def strip_jinja(text: str) -> str:
  """The literal text of a jinja template (expressions, statements and comments removed)."""
  return _JINJA_MARKUP.sub(" ", text).replace("|||", " ")


def _lines(text: str) -> Iterator[str]:
  for line in text.splitlines():
    line = " ".join(line.split())
    if line:
      yield line


def offline_corpus(cache: pathlib.Path | None = None) -> Iterator[str]:
  """Lines of the offline corpus, in a fixed order.

  Raises:
    FileNotFoundError: the archives are not in the cache (names `rospr fetch`).
  """
  # Imported here: both need the cache, and this module must stay importable without it.
  from rospr_jax.data import bigbench, catalog, templates  # pylint: disable=g-import-not-at-top
  templates_dir = archives.promptsource_templates_dir(cache)
  store = bigbench.BigBenchStore(archives.bigbench_dir(cache))
  seen = set()
  for spec in catalog.T0_TRAIN_DATASETS + catalog.HELD_OUT_DATASETS:
    if spec.key in seen:
      continue
    seen.add(spec.key)
    for template in templates.sorted_templates(templates.load_dataset_templates(templates_dir, spec.name, spec.subset)):
      yield from _lines(strip_jinja(template.jinja))
      for choice in template.fixed_answer_choices_list() or ():
        yield from _lines(choice)
  with zipfile.ZipFile(store.folder / "tasks.zip") as zf:
    sizes = {info.filename: info.file_size for info in zf.infolist()}
  for task in store.task_names():
    members = [f"{task}/{s}/task.json" for s in store.info(task)["subtasks"]] or [f"{task}/task.json"]
    if task not in catalog.BIGBENCH_TARGETS and max(sizes.get(m, 0) for m in members) > MAX_TASK_BYTES:
      continue
    for example in store.examples(task)[:MAX_EXAMPLES_PER_TASK]:
      yield from _lines(example.inputs)
      for choice in example.choices:
        yield from _lines(choice)


def train_sentencepiece(lines: Iterable[str], model_path: os.PathLike, vocab_size: int = OFFLINE_VOCAB_SIZE,
                        character_coverage: float = 0.9995) -> pathlib.Path:
  """Trains a unigram SentencePiece model with T5's special ids; writes `model_path` atomically.

  Raises:
    ValueError: an empty corpus, or one too small for `vocab_size` (SentencePiece's message kept).
  """
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  lines = [line for line in lines if line.strip()]
  if not lines:
    raise ValueError(f"cannot train a SentencePiece vocabulary for {model_path}: the corpus is empty")
  model_path = pathlib.Path(model_path)
  model_path.parent.mkdir(parents=True, exist_ok=True)
  tmp_dir = pathlib.Path(tempfile.mkdtemp(prefix=".spm-", dir=model_path.parent))
  try:
    try:
      spm.SentencePieceTrainer.train(
          sentence_iterator=iter(lines), model_prefix=str(tmp_dir / "m"), vocab_size=vocab_size,
          model_type="unigram", pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
          pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>", character_coverage=character_coverage,
          num_threads=1, minloglevel=2, input_sentence_size=0, shuffle_input_sentence=False,
          hard_vocab_limit=True)
    except RuntimeError as e:
      raise ValueError(f"SentencePiece training for {model_path} failed ({len(lines)} lines): {e}") from e
    artifacts.write_bytes(model_path, (tmp_dir / "m.model").read_bytes())
  finally:
    for leftover in tmp_dir.glob("*"):
      leftover.unlink()
    tmp_dir.rmdir()
  return model_path


def offline_vocabulary_path(cache: pathlib.Path | None = None, retrain: bool = False) -> str:
  """The offline SentencePiece model, trained once from the cached archives.

  Raises:
    FileNotFoundError: the model is absent and the archives are not cached (names `rospr fetch`).
  """
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  cache = cache or archives.cache_dir()
  model = cache / "vocab" / f"{OFFLINE_VOCAB_NAME}.model"
  manifest = model.with_suffix(".json")
  if model.exists() and manifest.exists() and not retrain:
    return str(model)
  lines = list(offline_corpus(cache))
  digest = hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()
  train_sentencepiece(lines, model)
  artifacts.write_json(manifest, {
      "vocab_size": OFFLINE_VOCAB_SIZE, "corpus_lines": len(lines), "corpus_sha256": digest,
      "sentencepiece": spm.__version__, "promptsource_sha256": archives.PROMPTSOURCE.sha256,
      "bigbench_sha256": archives.BIGBENCH.sha256, "pad_id": PAD_ID, "eos_id": EOS_ID, "unk_id": UNK_ID})
  return str(model)


def vocabulary_path(path: str | None = None) -> str:
  """`path`, else `$ROSPR_VOCAB`, else the offline vocabulary.

  Raises:
    FileNotFoundError: a given path (or $ROSPR_VOCAB) that does not exist.
  """
  origin = "the path given" if path else "$ROSPR_VOCAB"
  path = path or os.environ.get("ROSPR_VOCAB")
  if path:
    if not os.path.exists(path):
      raise FileNotFoundError(f"SentencePiece model {path} ({origin}) does not exist")
    return path
  return offline_vocabulary_path()
