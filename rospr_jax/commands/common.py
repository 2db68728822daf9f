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
import os
from typing import Any, Callable, Iterator, Mapping


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


def _flag(dest: str, flags: Mapping[str, str] | None = None) -> str:
  """The flag a user typed for the argparse `dest` (`flags` maps those that differ: "source" -> "--from")."""
  return (flags or {}).get(dest, f"--{dest.replace('_', '-')}")


def split_named(value: str) -> tuple[str, str]:
  """("NAME", "FILE") of a `NAME=FILE` value (`--source copa=gs://b/copa.jsonl`), split at the first "="
  (a path may hold one: `dt=2024/`); ("", value) of a value without a name."""
  name, sep, rest = value.partition("=")
  return (name, rest) if sep and "://" not in name else ("", value)


def _values(args: argparse.Namespace, dest: str) -> list:
  values = getattr(args, dest, None)
  return list(values) if isinstance(values, (list, tuple)) else [values]


def local_copies_of_args(args: argparse.Namespace, dests: tuple[str, ...], flags: Mapping[str, str] | None = None,
                         named: tuple[str, ...] = (), copiers: Mapping[str, Callable[[str, str], Any]] | None = None
                         ) -> None:
  """Replaces each URL among the path arguments `dests` of `args` (of a `NAME=URL` value of a `named`
  dest, the URL after its `=`) with its checked local copy (`storage.copies.local_copy`, or the dest's
  own `copiers[dest](path, flag)`: a `LocalCopy` that records name by its URL), naming the flag when
  there is nothing at the URL: the edge of a command, where its inputs are made local once."""
  from rospr_jax.storage import copies  # pylint: disable=g-import-not-at-top

  def local(value, dest: str):
    if not isinstance(value, str):
      return value
    name, path = split_named(value) if dest in named else ("", value)
    copy = (copiers or {}).get(dest, copies.local_copy)(path, _flag(dest, flags))
    return f"{name}={copy}" if name else copy
  for dest in dests:
    value = getattr(args, dest, None)
    if isinstance(value, list):
      setattr(args, dest, [local(v, dest) for v in value])
    elif value is not None:
      setattr(args, dest, local(value, dest))


@dataclasses.dataclass(frozen=True)
class FolderCommand:
  """The path flags of a command that writes one folder artifact (build-library, retrieve, convert),
  by argparse dest, and the frame every such command runs in (`run`).

  Attributes:
    out: the output folder's dest ("out"); it may be a URL (written there, manifest last).
    kind: the artifact's manifest kind (what `--overwrite` may replace).
    artifact: what the other processes say process 0 wrote ("the library").
    files: input files, each checked to be no folder.
    folders: input folders, each checked to be no file.
    others: other inputs (a file or a folder).
    named: the dests among the inputs whose values are `NAME=FILE`.
    flags: the flags typed for dests that differ from `--<dest>` ({"source": "--from"}).
    overwrite_flag: the flag that lets it replace an artifact of its kind (None: it never does).
    copiers: the dests whose URLs a function of their own makes local (`copiers[dest](path, flag)`: a
      prompt export's table folder is copied with the export root around it); the others'
      `storage.copies.local_copy`.
  Every input at a URL is read through its checked local copy, made by `prepare`.
  """
  out: str
  kind: str
  artifact: str
  files: tuple[str, ...] = ()
  folders: tuple[str, ...] = ()
  others: tuple[str, ...] = ()
  named: tuple[str, ...] = ()
  flags: Mapping[str, str] = dataclasses.field(default_factory=dict)
  overwrite_flag: str | None = "--overwrite"
  copiers: Mapping[str, Callable[[str, str], Any]] = dataclasses.field(default_factory=dict)

  @property
  def inputs(self) -> tuple[str, ...]:
    return (*self.others, *self.folders, *self.files)

  def paths(self, args: argparse.Namespace, dests: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    """(flag, path) of every string value of `dests` (a `NAME=FILE` value's FILE)."""
    for dest in dests:
      for value in _values(args, dest):
        if isinstance(value, str):
          yield _flag(dest, self.flags), split_named(value)[1] if dest in self.named else value

  def check_path_kinds(self, args: argparse.Namespace) -> None:
    """Refuses, naming the flag, a local input file that is a folder, or an input or output folder that
    is a file, before any work: Python's own "[Errno 21] Is a directory" or "[Errno 17] File exists"
    names neither the flag nor what was expected. Absent paths and URLs pass (the readers and writers
    say what is missing)."""
    import os  # pylint: disable=g-import-not-at-top
    for dests, wrong, expected in ((self.files, os.path.isdir, "a file"),
                                   ((self.out, *self.folders), os.path.isfile, "a folder")):
      for flag, path in self.paths(args, dests):
        if "://" not in path and wrong(path):
          raise ValueError(f"{flag} {path} is {'a folder' if expected == 'a file' else 'a file'}; give {expected}.")

  def prepare(self, args: argparse.Namespace, *, overwrite: bool) -> None:
    """The preamble, before any work: URLs refused where a flag reads local files only, a bucket out of
    reach named, path kinds checked; on process 0 (the one that writes and sees it) the destination
    checked (`storage.check_destination`: a folder of the user's, a link, the working folder or one
    above it, a folder holding an input or inside one, an artifact of its own kind without `--overwrite`) and what a
    killed writer of it left beside it removed; the inputs made local once, at the command's edge."""
    from rospr_jax import storage  # pylint: disable=g-import-not-at-top
    require_local_args(args, dict(self.flags), urls=(self.out, *self.inputs))
    self.check_path_kinds(args)
    out_flag = _flag(self.out, self.flags)
    out = getattr(args, self.out)
    storage.as_path(out, out_flag, output=True)
    if multihost.is_writer():
      storage.check_destination(out, out_flag, kind=self.kind, overwrite=overwrite,
                                overwrite_flag=self.overwrite_flag, inputs=[path for _, path in self.paths(args, self.inputs)])
      final = storage.absolute(out)  # a killed writer's temporary folder, if any, goes first
      storage.remove_leftovers(os.path.dirname(final), names=[os.path.basename(final)])
    local_copies_of_args(args, self.inputs, self.flags, self.named, self.copiers)

  def run(self, prog: str, args: argparse.Namespace, work: Callable[[], str], *, overwrite: bool = False,
          failures: tuple[tuple[type[BaseException], int], ...] = ()) -> int:
    """Runs a folder-writing command: `prepare`, then `work()` (every process computes its share,
    process 0 writes) returning what process 0 prints; the other processes wait for process 0 and
    say so. Bad input, a failure of `failures` ((exception type, exit code), besides ValueError and
    OSError: 2) or a full disk is one line naming the output; the exit code."""
    from rospr_jax import storage  # pylint: disable=g-import-not-at-top
    failures = (*failures, (ValueError, 2), (OSError, 2))
    out = getattr(args, self.out)
    try:
      self.prepare(args, overwrite=overwrite)
      printed = work()
      if wait_for_process_zero(prog, f"wrote {self.artifact} {storage.absolute(out)}"):
        return 0
    except tuple(kind for kind, _ in failures) as e:
      code = next(code for kind, code in failures if isinstance(e, kind))
      error(prog, storage.with_path(e, out))  # a full disk names the output
      return code
    print(printed)
    return 0


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
