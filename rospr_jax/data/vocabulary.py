"""The SentencePiece vocabulary: T0's (a path the user gives) or the project's own offline one.

`vocabulary_path()` is `$ROSPR_VOCAB` when set (point it at T5's / T0's `spiece.model`), else the
offline vocabulary. The offline vocabulary is a small model committed to the repository
(`rospr_jax/data/offline_vocab/`), trained by this project and retrained with one command:

    python -m rospr_jax.data.vocabulary --retrain

It is committed rather than trained at set-up so that every machine tokenizes alike whether or not
promptsource could be fetched there (the tests' tiny checkpoints and the demo depend on its ids), and
so that nothing a registry may stop serving is needed to make it. It is a unigram model with T5's
special ids (pad 0, eos 1, unk 2, no bos) and 2000 pieces (as many as the corpus below supports, at most 2191), trained on text the project owns or pins:

- the generated task family (`rospr_jax.data.generated.corpus()`), always;
- the text of every promptsource 0.2.3 template (279 datasets: T0's sources and held-out targets
  among them), with the jinja markup removed, and their fixed answer choices, when `rospr fetch` has cached promptsource (the
  manifest beside the model records whether it had).

The manifest (`<name>.json`) holds the corpus's sha256 and size and the model's sha256, checked on
every read. No TensorFlow or SeqIO is imported here, so the model side can use it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pathlib
import re
import sys
import tempfile
from typing import Iterable, Iterator

from rospr_jax import storage

OFFLINE_VOCAB_SIZE = 2000
OFFLINE_VOCAB_NAME = f"rospr_offline_unigram_{OFFLINE_VOCAB_SIZE}"
OFFLINE_VOCAB_DIR = pathlib.Path(__file__).parent / "offline_vocab"
RETRAIN_COMMAND = "python -m rospr_jax.data.vocabulary --retrain"
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


def offline_corpus(cache: pathlib.Path | None = None) -> tuple[list[str], bool]:
  """Lines of the offline corpus in a fixed order, and whether promptsource's templates were in it."""
  # Imported here: the catalog and templates modules are not needed to read the committed model.
  from rospr_jax.data import archives, generated, templates  # pylint: disable=g-import-not-at-top
  lines = [line for text in generated.corpus() for line in _lines(text)]
  try:
    templates_dir = archives.promptsource_templates_dir(cache)
  except FileNotFoundError:
    return lines, False
  for dataset, subset in templates.list_template_datasets(templates_dir):
    try:
      loaded = templates.load_dataset_templates(templates_dir, dataset, subset)
    except (FileNotFoundError, templates.TemplateError):
      continue  # a file promptsource itself cannot parse adds nothing
    for template in templates.sorted_templates(loaded):
      lines.extend(_lines(strip_jinja(template.jinja)))
      for choice in template.fixed_answer_choices_list() or ():
        lines.extend(_lines(choice))
  return lines, True


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
    storage.write_bytes(model_path, (tmp_dir / "m.model").read_bytes())
  finally:
    for leftover in tmp_dir.glob("*"):
      leftover.unlink()
    tmp_dir.rmdir()
  return model_path


def offline_vocabulary_path() -> str:
  """The committed offline SentencePiece model, checked against the sha256 its manifest records.

  Raises:
    FileNotFoundError / ValueError: the model or its manifest is missing or does not match (names the
      file and the command that retrains it).
  """
  model = OFFLINE_VOCAB_DIR / f"{OFFLINE_VOCAB_NAME}.model"
  manifest_path = model.with_suffix(".json")
  if not model.exists() or not manifest_path.exists():
    raise FileNotFoundError(f"The offline vocabulary {model} (or its manifest) is missing; restore it "
                            f"from git or run `{RETRAIN_COMMAND}`.")
  manifest = storage.read_json(manifest_path, "The offline vocabulary's manifest")
  if storage.sha256_file(model) != manifest.get("model_sha256"):
    raise ValueError(f"The offline vocabulary {model} does not match the sha256 in {manifest_path}; "
                     f"restore it from git or run `{RETRAIN_COMMAND}`.")
  return str(model)


def retrain_offline_vocabulary(folder: pathlib.Path = OFFLINE_VOCAB_DIR, cache: pathlib.Path | None = None) -> dict:
  """Trains the offline model from `offline_corpus()` into `folder`; returns the manifest written."""
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  lines, with_promptsource = offline_corpus(cache)
  model = train_sentencepiece(lines, pathlib.Path(folder) / f"{OFFLINE_VOCAB_NAME}.model")
  manifest = {
      "vocab_size": OFFLINE_VOCAB_SIZE, "corpus_lines": len(lines),
      "corpus_sha256": hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest(),
      "promptsource_templates": with_promptsource, "sentencepiece": spm.__version__,
      "model_sha256": storage.sha256_file(model), "pad_id": PAD_ID, "eos_id": EOS_ID, "unk_id": UNK_ID,
      "retrain": RETRAIN_COMMAND}
  storage.write_json(model.with_suffix(".json"), manifest)
  return manifest


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


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description="Retrain the committed offline SentencePiece vocabulary.")
  parser.add_argument("--retrain", action="store_true", help="train it again from the offline corpus")
  parser.add_argument("--out", default=str(OFFLINE_VOCAB_DIR), help="folder for the model and its manifest")
  args = parser.parse_args(argv)
  if not args.retrain:
    print(offline_vocabulary_path())
    return 0
  manifest = retrain_offline_vocabulary(pathlib.Path(args.out))
  print(f"trained {args.out}/{OFFLINE_VOCAB_NAME}.model from {manifest['corpus_lines']} lines "
        f"(promptsource templates: {manifest['promptsource_templates']})")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
