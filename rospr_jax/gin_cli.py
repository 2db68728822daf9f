"""T5X-style command lines for gin-configured entry points.

    rospr COMMAND --gin_file=FILE [--gin_file=...] [--gin.MACRO=VALUE ...] [--gin_bindings='X = Y']

`--gin_file` may repeat; files are looked up in the working directory, `--gin_search_paths` and the
project's gin directory. `--gin.NAME=VALUE` binds a macro (T5X's shorthand for
`--gin_bindings='NAME = VALUE'`); values are gin literals, so strings need inner quotes. Unset
`%gin.REQUIRED` macros are reported before anything runs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os

import gin

def _installed_gin_dirs() -> tuple[str, ...]:
  """The project's gin/ folder, installed as the data-only package `rospr_jax_gin` (no __init__.py,
  so that a checkout's gin/ never shadows the gin-config package)."""
  spec = importlib.util.find_spec("rospr_jax_gin")
  return tuple(spec.submodule_search_locations or ()) if spec else ()


GIN_DIRS = _installed_gin_dirs()


def parse_args(argv: list[str], prog: str, doc: str, example_file: str) -> tuple[argparse.Namespace, list[str]]:
  """Splits `--gin.NAME=VALUE` bindings from the other flags; returns (flags, bindings)."""
  parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
  parser.add_argument("--gin_file", action="append", default=[], help="gin file (repeatable)")
  parser.add_argument("--gin_bindings", action="append", default=[], help="gin binding (repeatable)")
  parser.add_argument("--gin_search_paths", default="", help="comma-separated directories for gin files")
  parser.add_argument("--log_level", default="INFO", help="Python logging level")
  bindings, rest = [], []
  for arg in argv:
    if arg.startswith("--gin."):
      name, sep, value = arg[len("--gin."):].partition("=")
      if not sep or not name:
        parser.error(f"{arg!r}: write --gin.NAME=VALUE.")
      bindings.append(f"{name} = {value}")
    else:
      rest.append(arg)
  args = parser.parse_args(rest)
  if not args.gin_file:
    parser.error(f"at least one --gin_file is required (e.g. --gin_file={example_file}).")
  return args, args.gin_bindings + bindings


def setup_logging(level: str) -> None:
  """T5X-like log lines; quiets absl (orbax logs every file it writes at INFO)."""
  logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                      format="%(asctime)s %(levelname)s %(name)s] %(message)s", force=True)
  logging.getLogger("absl").setLevel(logging.WARNING)


def parse_gin(files: list[str], bindings: list[str], search_paths: list[str]) -> None:
  """Parses gin files and bindings from a clean slate (unset %gin.REQUIRED macros raise here)."""
  gin.clear_config()
  for path in [os.getcwd(), *search_paths, *GIN_DIRS]:
    if path and os.path.isdir(path):
      gin.add_config_file_search_path(path)
  with _quiet_package_lookup():
    gin.parse_config_files_and_bindings(files, bindings, finalize_config=True)


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
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, "config.gin")
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(gin.operative_config_str())
  os.replace(tmp, path)
  return path
