"""T5X-style command lines for gin-configured entry points.

    rospr COMMAND --gin_file=FILE [--gin_file=...] [--gin.MACRO=VALUE ...] [--gin_bindings='X = Y']

`--gin_file` may repeat; files are looked up in the working directory, `--gin_search_paths` and the
project's gin directory. `--gin.NAME=VALUE` binds a macro (T5X's shorthand for
`--gin_bindings='NAME = VALUE'`); values are gin literals, so strings need inner quotes.

Parsing is strict, and every problem names the flag that caused it:

- a macro binding (`--gin.NAME=VALUE`, or `NAME = VALUE` in `--gin_bindings`) must name a macro the gin
  files define (or use as `%NAME`); a misspelt one is refused with the closest defined names (gin would
  make it a new, unused macro and the run would quietly keep the default);
- bindings of unknown configurables or parameters are refused (gin-config's own check);
- a value gin cannot parse is refused with a reminder that strings need inner quotes;
- all `%gin.REQUIRED` macros and parameters left unset are reported together, before anything runs;
- a gin file that includes itself, directly or through other files, is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib.util
import logging
import os
import re
import tokenize

import gin

from rospr_jax import storage

def _installed_gin_dirs() -> tuple[str, ...]:
  """The project's gin/ folder, installed as the data-only package `rospr_jax_gin` (no __init__.py,
  so that a checkout's gin/ never shadows the gin-config package)."""
  spec = importlib.util.find_spec("rospr_jax_gin")
  return tuple(spec.submodule_search_locations or ()) if spec else ()


GIN_DIRS = _installed_gin_dirs()


def parse_args(argv: list[str], prog: str, doc: str, example_file: str,
               add_arguments=None) -> tuple[argparse.Namespace, list[str]]:
  """Splits `--gin.NAME=VALUE` bindings from the other flags; returns (flags, bindings).
  `add_arguments(parser)` adds a command's own flags."""
  summary, _, details = doc.strip().partition("\n\n")  # --help prints each part once
  parser = argparse.ArgumentParser(prog=prog, description=summary,
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog=details or None)
  parser.add_argument("--gin_file", action="append", default=[], help="gin file (repeatable)")
  parser.add_argument("--gin_bindings", action="append", default=[], help="gin binding (repeatable)")
  parser.add_argument("--gin_search_paths", default="", help="comma-separated directories for gin files")
  parser.add_argument("--log_level", default="INFO", help="Python logging level")
  if add_arguments is not None:
    add_arguments(parser)
  bindings, rest = [], []
  for arg in argv:
    if arg.startswith("--gin."):
      name, sep, value = arg[len("--gin."):].partition("=")
      if not sep or not name:
        parser.error(f"{arg!r}: write --gin.NAME=VALUE.")
      bindings.append(_Binding(f"{name} = {value}", arg))
    else:
      rest.append(arg)
  args = parser.parse_args(rest)
  if not args.gin_file:
    parser.error(f"at least one --gin_file is required (e.g. --gin_file={example_file}).")
  return args, [_Binding(b, f"--gin_bindings={b!r}") for b in args.gin_bindings] + bindings


class _Binding(str):
  """A gin binding string that remembers the command-line flag it came from (for error messages)."""

  flag: str

  def __new__(cls, binding: str, flag: str):
    self = super().__new__(cls, binding)
    self.flag = flag
    return self


def setup_logging(level: str) -> None:
  """T5X-like log lines; quiets absl (orbax logs every file it writes at INFO)."""
  logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                      format="%(asctime)s %(levelname)s %(name)s] %(message)s", force=True)
  logging.getLogger("absl").setLevel(logging.WARNING)


def parse_gin(files: list[str], bindings: list[str], search_paths: list[str], *, required: bool = True) -> None:
  """Parses gin files and bindings from a clean slate, strictly (see the module docstring); with
  `required=False`, `%gin.REQUIRED` values left unset are allowed (`rospr plan` reads no data).

  Raises OSError (a missing file) or ValueError (every other problem, naming the flag); the config is
  finalized (locked) on success.
  """
  gin.clear_config()
  for path in [os.getcwd(), *search_paths, *GIN_DIRS]:
    if path and os.path.isdir(path):
      gin.add_config_file_search_path(path)
  with _quiet_package_lookup(), _refuse_include_cycles(files):
    try:
      gin.parse_config_files_and_bindings(files, None, finalize_config=False)
    except (tokenize.TokenError, UnicodeDecodeError) as e:  # gin says neither which file nor where
      raise ValueError(_unreadable_file(files, e)) from e
    try:
      _check_bindings(bindings)
      _parse_bindings(bindings)
    except (AttributeError, NameError, ImportError) as e:  # gin-config's "no such module/attribute"
      raise ValueError(str(e)) from e  # (with the file and line) for a selector or an import
  if required:
    _check_required()
  else:
    _leave_required_unset()
  gin.finalize()


_KEY_VALUE = re.compile(r"\s*([^=\n]*?)\s*=\s*(.*?)\s*", re.S)


def _flag(binding: str) -> str:
  """The command-line flag a binding came from (as typed, or as `--gin.NAME=VALUE` would write it)."""
  if isinstance(binding, _Binding):
    return binding.flag
  match = _KEY_VALUE.fullmatch(binding)
  if match and "\n" not in binding and re.fullmatch(r"[\w/]+", match[1]):
    return f"--gin.{match[1]}={match[2]}"
  return f"--gin_bindings={binding!r}"


class _Statements(gin.config_parser.ParserDelegate):
  """Parses bindings into gin statements without resolving references or macros (no side effects);
  records the `%NAME` references it meets."""

  def __init__(self):
    self.references: list[str] = []

  def configurable_reference(self, scoped_selector, evaluate):
    return None

  def macro(self, name):
    self.references.append(name)
    return None


def _check_bindings(bindings: list[str]) -> None:
  """Refuses, all in one message, bindings gin cannot parse, bindings of macros the files lack and
  references (`%NAME`) to such macros."""
  known = _defined_macros()
  constants = getattr(gin.config, "_CONSTANTS", None)
  problems = []
  for binding in bindings:
    delegate = _Statements()
    try:
      statements = list(gin.config_parser.ConfigParser(binding, delegate))
    except (SyntaxError, tokenize.TokenError) as e:  # TokenError: a bracket or string left open
      problems.append(_unparsable(binding, e))
      continue
    if known is None:
      continue
    for statement in statements:
      if isinstance(statement, gin.config_parser.BindingStatement) and not statement.arg_name:
        name = f"{statement.scope}/{statement.selector}" if statement.scope else statement.selector
        if name not in known:
          problems.append(f"{_flag(binding)}: {name} is not a macro the gin files define or use"
                          f"{_did_you_mean(name, known)}; a new macro would not reach any configurable")
    for name in delegate.references:
      is_constant = constants is None or bool(constants.matching_selectors(name))
      if name not in known and not is_constant:
        problems.append(f"{_flag(binding)}: %{name} is not a macro the gin files define or use"
                        f"{_did_you_mean(name, known)}")
  if problems:
    raise ValueError("\n".join(problems))


def _did_you_mean(name: str, known: set[str]) -> str:
  close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
  return f" (did you mean {' or '.join(close)}?)" if close else ""


def _unreadable_file(files: list[str], error: Exception) -> str:
  """Names the gin file that cannot be read or tokenized (a byte that is not UTF-8, a bracket or a
  string left open), which gin-config's own error does not."""
  for name in files:
    path = next((os.path.join(d, name) for d in ["", *gin.config._LOCATION_PREFIXES]  # pylint: disable=protected-access
                 if os.path.isfile(os.path.join(d, name))), None) if not os.path.isabs(name) else name
    if path is None or not os.path.isfile(path):
      continue
    raw = open(path, "rb").read()
    try:
      text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
      line = raw[:e.start].count(b"\n") + 1
      return f"--gin_file={name}: {path} line {line} is not UTF-8 (byte 0x{raw[e.start]:02x}); save it as UTF-8"
    try:
      list(gin.config_parser.ConfigParser(text, _Statements()))
    except tokenize.TokenError as e:
      return (f"--gin_file={name}: {path} ends inside an open bracket, parenthesis or string that starts "
              f"before line {e.args[1][0] if len(e.args) > 1 else '?'}; close it")
    except SyntaxError:
      continue
  return f"a gin file among {files} cannot be read: {error}"


def _unparsable(binding: str, error: Exception) -> str:
  flag = _flag(binding)
  match = _KEY_VALUE.fullmatch(binding)
  if not match:
    reason = (getattr(error, "msg", None) or str(error.args[0] if error.args else "")).strip().splitlines()[-1:] \
        or ["a syntax error"]
    return (f"{flag}: gin cannot parse it ({reason[0].strip()}); write NAME = VALUE, where VALUE is a gin "
            f"literal (strings need inner quotes)")
  value = match[2]
  if isinstance(error, tokenize.TokenError):
    return f"{flag}: gin cannot parse the value {value!r}: a bracket, parenthesis or string is left open"
  message = (f"{flag}: gin cannot parse the value {value!r}; values are gin literals, so strings need "
             f"inner quotes")
  if value and not set(value) & set("'\"\n\\"):
    quoted = f"'{value}'"
    if flag.startswith("--gin."):
      example = f"--gin.{match[1]}=\"{quoted}\""
    else:
      example = f"--gin_bindings=\"{binding[:match.start(2)]}{quoted}\""
    message += f", e.g. {example}"
  return message


def _defined_macros() -> set[str] | None:
  """The macros gin's config now binds (the files' `NAME = value` lines) or refers to (`%NAME` in a file
  that leaves NAME to the command line), or None if it can't tell."""
  config = getattr(gin.config, "_CONFIG", None)
  iterate = getattr(gin.config, "iterate_references", None)
  if not isinstance(config, dict) or iterate is None:  # a gin-config without these: skip the check
    return None
  defined = {scope for (scope, selector) in config if selector == "gin.macro"}
  used = {ref.config_key[0] for ref in iterate(config) if ref.config_key[1] == "gin.macro"}
  return defined | used


def _parse_bindings(bindings: list[str]) -> None:
  """Applies the bindings in one parse (as gin-config does: imports in one binding serve the next);
  an error names the flag of the binding it is about."""
  lines = []  # the bindings string's line number -> the binding on that line
  for binding in bindings:
    lines += [binding] * (binding.count("\n") + 1)
  try:
    gin.parse_config("\n".join(bindings))
  except (ValueError, SyntaxError) as e:  # (SyntaxErrors are caught by _check_bindings)
    message = str(e)
    where = re.search(r"\n  In bindings string line (\d+)\n", message)
    if not where or not 0 < int(where[1]) <= len(lines):
      raise
    raise ValueError(f"{_flag(lines[int(where[1]) - 1])}: {message[:where.start()]}") from None


def _unset_required() -> tuple[list[str], list[str]]:
  """(macros, parameters) bound to `%gin.REQUIRED`; none where gin-config lacks the internals read."""
  config = getattr(gin.config, "_CONFIG", None)
  reference = getattr(gin.config, "ConfigurableReference", None)
  retrieve = getattr(gin.config, "_retrieve_constant", None)
  if not isinstance(config, dict) or reference is None or retrieve is None:
    return [], []  # a gin-config without these internals: finalize() reports the first one
  macros, parameters = [], []
  for (scope, selector), values in config.items():
    for name, value in values.items():
      if (isinstance(value, reference) and value.configurable.wrapped is retrieve
          and value.scoped_configurable_fn() is gin.REQUIRED):
        if selector == "gin.macro":
          macros.append(scope)
        else:
          parameters.append(f"{scope}/{selector}.{name}" if scope else f"{selector}.{name}")
  return macros, parameters


def _leave_required_unset() -> None:
  """Binds every `%gin.REQUIRED` left unset to None (a command that reads none of them)."""
  macros, parameters = _unset_required()
  gin.parse_config([f"{name} = None" for name in macros + parameters])


def _check_required() -> None:
  """Reports every `%gin.REQUIRED` left unset at once (gin-config's finalize hook stops at the first)."""
  macros, parameters = _unset_required()
  problems = []
  if macros:
    macros.sort()
    problems.append(f"%gin.REQUIRED macros left unset: {', '.join(macros)} "
                    f"(set each with --gin.NAME=VALUE, e.g. --gin.{macros[0]}=...)")
  if parameters:
    parameters.sort()
    problems.append(f"%gin.REQUIRED parameters left unset: {', '.join(parameters)} "
                    f"(bind each with --gin_bindings='NAME = VALUE')")
  if problems:
    raise ValueError("; ".join(problems))


@contextlib.contextmanager
def _refuse_include_cycles(files: list[str]):
  """Refuses a gin file that includes itself, directly or through others (gin-config recurses until
  RecursionError). The files being read are tracked through gin-config's file readers: a file is open
  while the files it includes are parsed, so the open files are the chain of includes."""
  readers = getattr(gin.config, "_FILE_READERS", None)
  if not isinstance(readers, list):  # a gin-config without the private list: catch the recursion
    try:
      yield
    except RecursionError:
      raise ValueError(f"the gin files {', '.join(files)} include themselves in a cycle") from None
    return

  chain: list[tuple[str, str]] = []  # (real path, path as opened)
  cycle: list[str] = []

  def tracked(reader):
    @contextlib.contextmanager
    def read(path):
      real = os.path.realpath(path)
      if any(real == seen for seen, _ in chain):
        start = [seen for seen, _ in chain].index(real)
        cycle[:] = [opened for _, opened in chain[start:]] + [path]
        raise _IncludeCycle(real)
      chain.append((real, path))
      try:
        with reader(path) as f:
          yield f
      finally:
        chain.pop()
    return read

  saved = list(readers)
  readers[:] = [(tracked(reader), exists) for reader, exists in saved]
  try:
    yield
  except _IncludeCycle:  # gin adds each include's location to the message: report the cycle alone
    what = "includes itself" if len(cycle) == 2 else f"includes itself through {' -> '.join(cycle[1:-1])}"
    raise ValueError(f"gin file {cycle[0]} {what}; remove the include") from None
  finally:
    readers[:] = saved


class _IncludeCycle(ValueError):
  pass


@contextlib.contextmanager
def _quiet_package_lookup():
  """Makes gin-config's package lookup of gin files quiet and safe while parsing.

  Besides the file system, gin-config tries every relative name (`eval/base.gin` under each search path,
  the working directory first) as a file inside an importable package named by its folders (`eval`):
  each miss logs an ERROR line, and a folder that imports as a namespace package (a `models/` folder
  in the working directory, `tests/eval` under pytest) crashes the lookup with a TypeError. Here a miss
  is silent and such a folder is a miss; files inside installed packages are still found.
  """
  readers = getattr(gin.config, "_FILE_READERS", None)
  if not isinstance(readers, list):  # a gin-config without the private list: keep its behaviour
    yield
    return

  def quiet(exists):
    def check(path: str) -> bool:
      previous = logging.root.manager.disable
      logging.disable(logging.ERROR)
      try:
        return bool(exists(path))
      except TypeError:
        return False
      finally:
        logging.disable(previous)
    return check

  saved = list(readers)
  readers[:] = [(reader, exists if exists is os.path.isfile else quiet(exists)) for reader, exists in saved]
  try:
    yield
  finally:
    readers[:] = saved


def write_operative_config(directory: str) -> str:
  """Writes gin's operative config to `<directory>/config.gin` (atomically); returns the path."""
  path = os.path.join(directory, "config.gin")
  storage.write_text(path, gin.operative_config_str())
  return path
