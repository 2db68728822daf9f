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
