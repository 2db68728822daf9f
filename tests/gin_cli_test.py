"""Gin file lookup: the project's files are found by their gin/-relative names from any directory."""

from __future__ import annotations

import logging

import gin
import pytest

from rospr_jax import gin_cli


def test_project_files_parse_without_error_logs_from_a_folder_named_like_theirs(tmp_path, monkeypatch,
                                                                                 caplog):
  """gin-config's package lookup logged ERRORs for every search-path miss and crashed (TypeError) when
  a folder such as `eval/` imports as a namespace package; lookups are plain file lookups now."""
  (tmp_path / "eval").mkdir()  # a namespace package `eval` once the folder is on sys.path
  monkeypatch.chdir(tmp_path)
  monkeypatch.syspath_prepend(str(tmp_path))
  with caplog.at_level(logging.INFO):
    gin_cli.parse_gin(["eval/bigbench_targets.gin"], ["CHECKPOINT = '/c'", "OUTPUT_DIR = '/o'"], [])
  try:
    assert gin.query_parameter("%TARGETS") == ["bigbench"]
  finally:
    gin.clear_config()
  assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_missing_file_names_itself_and_where_it_was_looked_for():
  with pytest.raises(IOError, match=r"Unable to open file: eval/nope.gin\. Searched config paths"):
    gin_cli.parse_gin(["eval/nope.gin"], [], [])
  gin.clear_config()
