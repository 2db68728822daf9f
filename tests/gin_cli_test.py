"""Gin file lookup: the project's files are found by their gin/-relative names from any directory."""

from __future__ import annotations

import logging

import gin
import pytest

from rospr_jax import gin_cli


def test_project_files_parse_without_error_logs_from_a_folder_named_like_theirs(tmp_path, monkeypatch,
                                                                                 caplog):
  """gin-config's package lookup logged ERRORs for every search-path miss and crashed (TypeError) when
  a folder such as `eval/` imports as a namespace package; its misses are now silent and safe."""
  (tmp_path / "eval").mkdir()  # a namespace package `eval` once the folder is on sys.path
  monkeypatch.chdir(tmp_path)
  monkeypatch.syspath_prepend(str(tmp_path))
  with caplog.at_level(logging.INFO):
    gin_cli.parse_gin(["models/checkpoint.gin", "eval/bigbench_targets.gin"], ["CHECKPOINT = '/c'", "OUTPUT_DIR = '/o'"], [])
  try:
    assert gin.query_parameter("%TARGETS") == ["bigbench"]
  finally:
    gin.clear_config()
  assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_missing_file_names_itself_and_where_it_was_looked_for():
  with pytest.raises(IOError, match=r"Unable to open file: eval/nope.gin\. Searched config paths"):
    gin_cli.parse_gin(["eval/nope.gin"], [], [])
  gin.clear_config()


def test_gin_files_inside_installed_packages_are_still_found(tmp_path, monkeypatch):
  """gin-config's own package lookup (`package/folder/file.gin`) keeps working for T5X-style configs."""
  package = tmp_path / "site" / "rospr_gin_pkg_for_test" / "configs"
  package.mkdir(parents=True)
  (package.parent / "__init__.py").write_text("")
  (package / "__init__.py").write_text("")
  (package / "answer.gin").write_text("ANSWER = 42\n")
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  monkeypatch.chdir(elsewhere)
  monkeypatch.syspath_prepend(str(tmp_path / "site"))
  gin_cli.parse_gin(["rospr_gin_pkg_for_test/configs/answer.gin"], [], [])
  try:
    assert gin.query_parameter("%ANSWER") == 42
  finally:
    gin.clear_config()


@gin.configurable(module="gin_cli_test")
def run(output_dir=None, checkpoint=None, max_examples=None, num_queries=32):
  return output_dir, checkpoint, max_examples, num_queries


RUN_GIN = """
OUTPUT_DIR = %gin.REQUIRED
CHECKPOINT = %gin.REQUIRED
MAX_EXAMPLES = None
NUM_QUERIES = 32

gin_cli_test.run:
  output_dir = %OUTPUT_DIR
  checkpoint = %CHECKPOINT
  max_examples = %MAX_EXAMPLES
  num_queries = %NUM_QUERIES
"""
SET = ["--gin.OUTPUT_DIR='/o'", "--gin.CHECKPOINT='/c'"]


@pytest.fixture
def parse(tmp_path):
  """parse(*flags): a command line with --gin_file=run.gin (RUN_GIN, found on a search path) through
  parse_args and parse_gin, as the commands do; the config is cleared afterwards."""
  (tmp_path / "run.gin").write_text(RUN_GIN)

  def parse(*flags, gin_file="run.gin"):
    args, bindings = gin_cli.parse_args([f"--gin_file={gin_file}", *flags], "rospr test", "Test.", "run.gin")
    gin_cli.parse_gin(args.gin_file, bindings, [str(tmp_path)])

  yield parse
  gin.clear_config()


def test_flags_of_defined_macros_reach_the_configurable(parse):
  parse(*SET, "--gin.MAX_EXAMPLES=5", "--gin_bindings=gin_cli_test.run.num_queries = 4")
  assert run() == ("/o", "/c", 5, 4)


def test_a_misspelt_macro_flag_is_refused_with_the_closest_names(parse):
  """gin-config would make MAX_EXAMPLE a new macro that nothing reads, and the run would use the default."""
  with pytest.raises(ValueError) as error:
    parse(*SET, "--gin.MAX_EXAMPLE=5", "--gin.NUM_QUERY=3", "--gin.UNHEARD_OF=1")
  message = str(error.value)
  assert ("--gin.MAX_EXAMPLE=5: MAX_EXAMPLE is not a macro the gin files define or use "
          "(did you mean MAX_EXAMPLES?)") in message
  assert ("--gin.NUM_QUERY=3: NUM_QUERY is not a macro the gin files define or use "
          "(did you mean NUM_QUERIES?)") in message
  assert "--gin.UNHEARD_OF=1: UNHEARD_OF is not a macro the gin files define or use;" in message  # none close
  assert len(message.splitlines()) == 3  # every bad flag in one message


def test_bindings_of_unknown_macros_configurables_and_parameters_are_refused_by_flag(parse):
  for binding, expected in [
      ("MAX_EXAMPLE = 5",
       "MAX_EXAMPLE is not a macro the gin files define or use (did you mean MAX_EXAMPLES?)"),
      ("gin_cli_test.run.max_examples = %MAX_EXAMPLE",
       "%MAX_EXAMPLE is not a macro the gin files define or use (did you mean MAX_EXAMPLES?)"),
      ("gin_cli_test.run.max_example = 5", "Configurable 'gin_cli_test.run' doesn't have a parameter named "
                                           "'max_example'."),
      ("gin_cli_test.walk.max_examples = 5", "No configurable matching 'gin_cli_test.walk'."),
  ]:
    with pytest.raises(ValueError) as error:
      parse(*SET, f"--gin_bindings={binding}")
    assert str(error.value).startswith(f"--gin_bindings='{binding}': {expected}"), str(error.value)


def test_bindings_passed_to_parse_gin_directly_are_named_as_flags(parse, tmp_path):
  with pytest.raises(ValueError, match=r"^--gin\.MAX_EXAMPLE=5: MAX_EXAMPLE is not a macro"):
    gin_cli.parse_gin(["run.gin"], ["OUTPUT_DIR = '/o'", "CHECKPOINT = '/c'", "MAX_EXAMPLE = 5"],
                      [str(tmp_path)])


def test_every_unset_required_macro_is_reported_at_once(parse):
  """gin-config's finalize stops at the first one; a run would need one try per macro."""
  with pytest.raises(ValueError) as error:
    parse()
  assert str(error.value) == ("%gin.REQUIRED macros left unset: CHECKPOINT, OUTPUT_DIR "
                              "(set each with --gin.NAME=VALUE, e.g. --gin.CHECKPOINT=...)")
  with pytest.raises(ValueError, match=r"macros left unset: OUTPUT_DIR .*; %gin\.REQUIRED parameters left "
                                       r"unset: gin_cli_test\.run\.num_queries"):
    parse("--gin.CHECKPOINT='/c'", "--gin_bindings=gin_cli_test.run.num_queries = %gin.REQUIRED")


def test_a_value_gin_cannot_parse_names_the_flag_and_the_inner_quotes(parse):
  with pytest.raises(ValueError) as error:
    parse("--gin.CHECKPOINT='/c'", "--gin.OUTPUT_DIR=/runs/x")
  assert str(error.value) == ("--gin.OUTPUT_DIR=/runs/x: gin cannot parse the value '/runs/x'; values are "
                              "gin literals, so strings need inner quotes, e.g. "
                              "--gin.OUTPUT_DIR=\"'/runs/x'\"")
  with pytest.raises(ValueError) as error:
    parse(*SET, "--gin_bindings=gin_cli_test.run.checkpoint = ckpt")
  assert str(error.value) == ("--gin_bindings='gin_cli_test.run.checkpoint = ckpt': gin cannot parse the "
                              "value 'ckpt'; values are gin literals, so strings need inner quotes, e.g. "
                              "--gin_bindings=\"gin_cli_test.run.checkpoint = 'ckpt'\"")


def test_a_gin_file_that_includes_itself_is_refused_in_one_line(parse, tmp_path):
  """gin-config recursed until RecursionError."""
  (tmp_path / "loop.gin").write_text("include 'loop.gin'\nX = 1\n")
  with pytest.raises(ValueError) as error:
    parse(gin_file="loop.gin")
  assert str(error.value) == f"gin file {tmp_path / 'loop.gin'} includes itself; remove the include"
  for name, include in [("a.gin", "b.gin"), ("b.gin", "c.gin"), ("c.gin", "a.gin")]:
    (tmp_path / name).write_text(f"include '{include}'\n")
  with pytest.raises(ValueError) as error:
    parse(gin_file="a.gin")
  assert str(error.value) == (f"gin file {tmp_path / 'a.gin'} includes itself through "
                              f"{tmp_path / 'b.gin'} -> {tmp_path / 'c.gin'}; remove the include")


def test_a_file_included_twice_without_a_cycle_is_fine(parse, tmp_path):
  (tmp_path / "left.gin").write_text("include 'run.gin'\n")
  (tmp_path / "right.gin").write_text("include 'run.gin'\n")
  (tmp_path / "both.gin").write_text("include 'left.gin'\ninclude 'right.gin'\nNUM_QUERIES = 8\n")
  parse(*SET, gin_file="both.gin")
  assert run() == ("/o", "/c", None, 8)


def test_a_macro_that_a_file_uses_but_leaves_to_the_command_line_may_be_set(parse, tmp_path):
  (tmp_path / "open.gin").write_text("include 'run.gin'\ngin_cli_test.run.num_queries = %QUERIES\n")
  parse(*SET, "--gin.QUERIES=7", gin_file="open.gin")
  assert run() == ("/o", "/c", None, 7)


@pytest.mark.parametrize("command", ["train-prompts", "evaluate"])
def test_a_bracket_left_open_or_a_file_not_in_utf8_is_one_line_naming_flag_file_and_line(command, tmp_path):
  """What gin-config leaves to Python's tokenizer (an open bracket: tokenize.TokenError) or to the file
  reader (a Latin-1 byte: UnicodeDecodeError) was a traceback without the flag or the file."""
  import subprocess
  import sys
  open_bracket = tmp_path / "open.gin"
  open_bracket.write_text("TRAIN_STEPS = 2\nBATCH_SIZE = [4\n")
  latin = tmp_path / "latin.gin"
  latin.write_bytes(b"# settings\n# caf\xe9\nTRAIN_STEPS = 2\n")
  run_file = "prompt_tuning/train_jsonl.gin" if command == "train-prompts" else "eval/generated_targets.gin"
  cases = {"--gin.TRAIN_STEPS=[2": "--gin.TRAIN_STEPS=[2: gin cannot parse the value '[2': a bracket, "
                                   "parenthesis or string is left open",
           f"--gin_file={open_bracket}": f"--gin_file={open_bracket}: {open_bracket} ends inside an open bracket",
           f"--gin_file={latin}": f"--gin_file={latin}: {latin} line 2 is not UTF-8 (byte 0xe9); save it as UTF-8"}
  for flag, expected in cases.items():
    done = subprocess.run([sys.executable, "-m", "rospr_jax.cli", command, "--gin_file=models/tiny.gin",
                           f"--gin_file={run_file}", flag], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 2, (flag, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    (line,) = [l for l in done.stderr.splitlines() if l.startswith(f"rospr {command}:")]
    assert expected in line, (flag, line)
  assert not (tmp_path / "run").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["latin.gin", "open.gin"]
