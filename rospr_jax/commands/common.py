"""What the `rospr` commands share: the gin run idiom of the long runs, and the retriever flags.

Long runs (`train-prompts`, `evaluate`) are gin-configured in T5X's style; the other commands take
argparse flags. Every command answers bad input (a value, a file, a setting it reads) with one line on
stderr and exit code 2, no traceback (`error`); a flag argparse cannot parse gets its usage and error
line, also exit code 2 (tests/commands/one_line_errors_test.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import sys
from typing import Any, Callable


from rospr_jax import distributed, multihost, preemption


GIN_CALL_NOTE = "\n  In call to configurable"  # what gin appends to an error raised in a configurable


def _say(prog: str, message: Any) -> None:
  """Writes `prog: message` on stderr, one line (gin's note on the configurable that raised, which
  names a function object on a second line, left out)."""
  message = str(message).split(GIN_CALL_NOTE)[0]
  sys.stderr.write(f"{prog}: {message}\n")  # one write: no runtime log line lands inside it
  sys.stderr.flush()


def error(prog: str, message: Any) -> int:
  """Prints `prog: message` on stderr; returns the exit code of bad input (2)."""
  _say(prog, message)
  distributed.note_error(str(message))  # what the other processes of a multi-process run report
  return 2


def require_local_args(args: argparse.Namespace, flags: dict[str, str] | None = None, *,
                       urls: tuple[str, ...] = ()) -> None:
  """Refuses the URLs among a command's string arguments but those whose dest is in `urls` (a
  `NAME=FILE` value is checked after the `=`), naming the flag (`flags` maps a dest to the flag typed)
  and how to mount the bucket: these files are opened by code that reads local files only."""
  from rospr_jax import storage  # pylint: disable=g-import-not-at-top
  for name, value in vars(args).items():
    for item in value if isinstance(value, (list, tuple)) and name not in urls else [value]:
      if not isinstance(item, str) or name in urls:
        continue
      scheme = storage.is_url(item) or item.startswith("file://")
      text = item.split("=", 1)[1] if "=" in item and not scheme else item
      if storage.is_url(text):
        bucket, rest = text.split("://", 1)[1].split("/", 1)[0], text.split("://", 1)[1]
        flag = (flags or {}).get(name, f"--{name.replace('_', '-')}")
        raise ValueError(f"{flag} {text!r} is a URL; this flag reads local or mounted paths. Mount the "
                         f"bucket (run_tpu.sh --mount {bucket}, or gcsfuse --implicit-dirs {bucket} "
                         f"/gcs/{bucket}) and pass /gcs/{rest}.")


def local_copies_of_args(args: argparse.Namespace, dests: tuple[str, ...]) -> None:
  """Replaces each URL among the file arguments `dests` of `args` (a `NAME=URL` value after its `=`)
  with its checked local copy (`storage.copies.local_copy`), naming the flag when there is nothing at
  the URL: the edge of a command, where its inputs are made local once."""
  from rospr_jax.storage import copies  # pylint: disable=g-import-not-at-top

  def local(value: str, flag: str) -> str:
    name, sep, rest = value.partition("=") if "=" in value and "://" not in value.split("=", 1)[0] else ("", "", value)
    return name + sep + copies.local_copy(rest, flag) if sep else copies.local_copy(rest, flag)
  for dest in dests:
    value, flag = getattr(args, dest, None), f"--{dest.replace('_', '-')}"
    if isinstance(value, str):
      setattr(args, dest, local(value, flag))
    elif isinstance(value, list):
      setattr(args, dest, [local(v, flag) if isinstance(v, str) else v for v in value])


def check_path_kinds(args, *, files: tuple[str, ...] = (), folders: tuple[str, ...] = ()) -> None:
  """Refuses, naming the flag, a local path of the wrong kind among `args`' `files` (read as files) and
  `folders` (written as folders), before any work: Python's own "[Errno 21] Is a directory" or
  "[Errno 17] File exists" names neither the flag nor what was expected. Absent paths and URLs pass
  (the readers and writers say what is missing)."""
  import os  # pylint: disable=g-import-not-at-top
  for dests, wrong, expected in ((files, os.path.isdir, "a file"), (folders, os.path.isfile, "a folder")):
    for dest in dests:
      values = getattr(args, dest, None)
      for value in values if isinstance(values, list) else [values]:
        path = value.rpartition("=")[2] if isinstance(value, str) and dest == "source" else value
        if isinstance(path, str) and "://" not in path and wrong(path):
          raise ValueError(f"--{dest.replace('_', '-')} {path} is {'a folder' if expected == 'a file' else 'a file'}; "
                           f"give {expected}.")


def check_output(args, dest: str, *, kind: str, inputs: tuple[str, ...] = (), overwrite: bool = False) -> None:
  """Refuses, before any work, the output folder of flag `dest` when the command may not write there
  (`storage.check_destination`: a folder of the user's, a link, the working folder or one above it, a
  folder holding one of the paths of the `inputs` flags, an artifact of its own `kind` without
  `--overwrite`)."""
  from rospr_jax import storage  # pylint: disable=g-import-not-at-top
  paths = []
  for name in inputs:
    values = getattr(args, name, None)
    for value in values if isinstance(values, (list, tuple)) else [values]:
      if isinstance(value, str):
        paths.append(value.rpartition("=")[2] if name == "source" else value)
  storage.check_destination(getattr(args, dest), f"--{dest.replace('_', '-')}", kind=kind,
                            overwrite=overwrite, inputs=paths)


@dataclasses.dataclass(frozen=True)
class FolderCommand:
  """The path flags of a command that writes one folder artifact (build-library, retrieve), by dest.

  Attributes:
    out: the output folder's dest ("out"); it may be a URL (written there, manifest last).
    kind: the artifact's manifest kind (what `--overwrite` may replace).
    files: input files, each checked to be no folder.
    folders: input folders, each checked to be no file.
    others: other inputs (a file or a folder).
  Every input at a URL is read through its checked local copy, made by the command's preamble.
  """
  out: str
  kind: str
  files: tuple[str, ...] = ()
  folders: tuple[str, ...] = ()
  others: tuple[str, ...] = ()


def prepare_folder_command(args: argparse.Namespace, command: FolderCommand, *, overwrite: bool) -> None:
  """The preamble of a folder-writing command, before any work: URLs refused where a flag reads local
  files only, a bucket out of reach named, path kinds checked, the destination checked on process 0
  (the one that writes and sees it), and the inputs made local once, at the command's edge."""
  from rospr_jax import storage  # pylint: disable=g-import-not-at-top
  inputs = (*command.others, *command.folders, *command.files)
  require_local_args(args, urls=(command.out, *inputs))
  check_path_kinds(args, files=command.files, folders=(command.out, *command.folders))
  storage.as_path(getattr(args, command.out), f"--{command.out}", output=True)
  if multihost.is_writer():
    check_output(args, command.out, kind=command.kind, inputs=inputs, overwrite=overwrite)
  local_copies_of_args(args, inputs)


def gin_error_line(error: BaseException) -> str:
  """gin's error in one line, its location first: `FILE:LINE: message (the line)` (gin writes the
  file, line and text below the message)."""
  text = str(error).strip()
  where = re.search(r'\n\s*In file "(.+)", line (\d+)\n\s*(.*)\s*$', text)
  if not where:
    return " ".join(text.split())
  message = " ".join(text[:where.start()].split())
  return f"{where.group(1)}:{where.group(2)}: {message} ({where.group(3).strip()})"


def run_gin_command(argv: list[str], *, prog: str, doc: str, example_file: str,
                    run: Callable[[], Any],
                    failures: tuple[tuple[type[BaseException], int], ...] = ((OSError, 2), (ValueError, 2)),
                    required: bool = True, add_arguments=None) -> tuple[int, Any]:
  """Parses `--gin_file` / `--gin.MACRO=VALUE` flags, then calls the gin-configured `run()`.

  Args:
    failures: (exception type, exit code) pairs reported as one line instead of a traceback.
    required: refuse `%gin.REQUIRED` values left unset (`rospr plan` needs none of them).
    add_arguments: `add_arguments(parser)` adds the command's own flags; `run(flags)` then gets them.

  Returns (exit code, what `run` returned, or None when it failed or was preempted: one line and
  `preemption.EXIT_CODE`). Gin is cleared afterwards, so no binding outlives the command.
  """
  import gin  # pylint: disable=g-import-not-at-top
  from rospr_jax import gin_cli  # pylint: disable=g-import-not-at-top
  args, bindings = gin_cli.parse_args(argv, prog, doc, example_file, add_arguments)
  gin_cli.setup_logging(args.log_level)
  try:
    gin_cli.parse_gin(args.gin_file, bindings, [p for p in args.gin_search_paths.split(",") if p],
                      required=required)
  except (OSError, SyntaxError, ValueError) as e:
    gin.clear_config()
    return error(prog, f"gin config error: {gin_error_line(e)}"), None
  try:
    return 0, run() if add_arguments is None else run(args)
  except preemption.Preempted as e:  # stopped at the point every process agreed on, saved there
    _say(prog, str(e).split(GIN_CALL_NOTE)[0])
    return preemption.EXIT_CODE, None
  except tuple(kind for kind, _ in failures) as e:
    logging.debug("%s failed", prog, exc_info=True)
    code = next(code for kind, code in failures if isinstance(e, kind))
    error(prog, f"error: {e}")
    return code, None
  finally:
    gin.clear_config()


def positive_int(text: str) -> int:
  """An argparse type: an integer >= 1 (argparse names the flag: `argument --max-length: ...`)."""
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
  return value


def add_retriever_arguments(parser: argparse.ArgumentParser, *, backbone_flag: str | None = None) -> None:
  """The retriever and vocabulary flags shared by `build-library` and `retrieve` (whose `backbone_flag`
  the dtype applies to as well)."""
  group = parser.add_mutually_exclusive_group(required=True)
  group.add_argument("--retriever", help="Retriever checkpoint (Hugging Face or T5X directory).")
  group.add_argument("--random-retriever", metavar="SIZE",
                     help="A retriever with random weights of this size (tiny, small), with at "
                          "least as many embeddings as --vocab has pieces: demo, tests.")
  parser.add_argument("--retriever-seed", type=int, default=0, help="Seed of --random-retriever.")
  parser.add_argument("--vocab", required=True, help="SentencePiece model (pad 0, EOS 1, UNK 2).")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                      help="Activation dtype of the retriever" + (
                          f" and of {backbone_flag} (VAR)." if backbone_flag else "."))
  parser.add_argument("--max-length", type=positive_int, default=512,  # embed.DEFAULT_MAX_LENGTH (no JAX here)
                      help="Input tokens kept per text.")
  parser.add_argument("--tokens-per-batch", type=positive_int, default=65_536,  # embed.DEFAULT_TOKENS_PER_BATCH
                      help="Padded tokens per embedding batch.")


def embedder_from_args(args):
  """(embedder, tokenizer) from the flags of `add_retriever_arguments`; the embedder splits its
  batches over the devices of every process (each process must embed the same texts)."""
  from rospr_jax import tokenization  # pylint: disable=g-import-not-at-top
  from rospr_jax.library import embed  # pylint: disable=g-import-not-at-top
  tokenizer = tokenization.Tokenizer(args.vocab)
  embedder = embed.load_embedder(args.retriever, random_size=args.random_retriever,
                                 seed=args.retriever_seed, min_vocab_size=tokenizer.vocab_size,
                                 dtype=args.dtype, max_length=args.max_length,
                                 tokens_per_batch=args.tokens_per_batch,
                                 partitioner=embed.data_partitioner())
  tokenizer.check_fits(embedder.config.vocab_size, "the retriever")
  return embedder, tokenizer


def wait_for_process_zero(prog: str, what: str) -> bool:
  """Ends a command that every process of a multi-process run computes and process 0 writes: each
  process waits here until process 0 is done too (a failure of process 0 stops the others:
  `rospr_jax.distributed`). True, after saying so, on the processes other than 0."""
  import jax  # pylint: disable=g-import-not-at-top
  multihost.barrier(f"{prog}: process 0 {what}")
  if multihost.is_writer():
    return False
  print(f"{prog}: process {jax.process_index()} of {jax.process_count()} did its share; process 0 {what}.")
  return True
