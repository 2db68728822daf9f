"""What the documents name exists: every gin file opens with T5X's two header sections, and every flag
(`--name`) and gin macro (`--gin.NAME`, `NAME=`, a gin header's `- NAME:`) that README.md,
docs/design.md and the gin headers name is one a parser or a gin file defines."""

from __future__ import annotations

import contextlib
import importlib
import io
import pathlib
import re
import subprocess
import sys

import pytest

from rospr_jax import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/design.md")
GIN_FILES = sorted((ROOT / "gin").rglob("*.gin"))
SECTIONS = ("# Required to be set:", "# Commonly overridden options:")
PLACEHOLDERS = {"NAME"}  # `--gin.NAME=VALUE`: the documents' name for any macro
# Environment variables the documents set that belong to the libraries, not to this project's code.
LIBRARY_ENV = {"EPATH_USE_TF": "etils.epath", "JAX_NUM_CPU_DEVICES": "JAX", "JAX_COORDINATOR_ADDRESS": "JAX"}


def _header(path: pathlib.Path) -> list[str]:
  """The comment lines a gin file opens with."""
  lines = path.read_text().splitlines()
  return lines[:next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))]


@pytest.mark.parametrize("path", GIN_FILES, ids=lambda p: str(p.relative_to(ROOT / "gin")))
def test_every_gin_file_opens_with_the_two_header_sections(path):
  header = _header(path)
  assert all(section in header for section in SECTIONS), f"{path}: {SECTIONS} not both in its header"
  assert header.index(SECTIONS[0]) < header.index(SECTIONS[1]), path


def _doc_texts() -> dict[str, str]:
  """{name: text} of the documents and the gin headers, without `#SBATCH` lines (sbatch's flags)."""
  texts = {name: (ROOT / name).read_text() for name in DOCS}
  texts.update({str(p.relative_to(ROOT)): "\n".join(_header(p)) for p in GIN_FILES})
  return {name: "\n".join(l for l in text.splitlines() if "#SBATCH" not in l) for name, text in texts.items()}


def _help_of(module: str, argv: list[str]) -> str:
  """What `module.main(argv + ['--help'])` prints (argparse's help; no command runs)."""
  out = io.StringIO()
  with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
    importlib.import_module(module).main([*argv, "--help"])
  return out.getvalue()


def _known_flags() -> set[str]:
  """Every flag of every `rospr` command, of run_tpu.sh, of the vocabulary module and of the bench
  script the README runs, read from their help."""
  helps = [_help_of(cli.command_module(name), []) for name in cli.COMMANDS]
  helps.append(_help_of("rospr_jax.data.vocabulary", []))
  helps.append(subprocess.run(["bash", str(ROOT / "run_tpu.sh"), "--help"], capture_output=True, text=True,
                              check=True).stdout)
  helps.append(subprocess.run([sys.executable, str(ROOT / "bench" / "prompt_tuning.py"), "--help"],
                              capture_output=True, text=True, check=True, cwd=ROOT).stdout)
  helps.append(subprocess.run([sys.executable, str(ROOT / "bench" / "tpu_plan.py"), "--help"],
                              capture_output=True, text=True, check=True, cwd=ROOT).stdout)
  return {flag for text in helps for flag in re.findall(r"(?<![\w-])--([a-z][a-z0-9_-]*)", text)}


def _defined_macros() -> set[str]:
  return {m for p in GIN_FILES for m in re.findall(r"^([A-Z][A-Z0-9_]*)\s*=", p.read_text(), re.M)}


def test_every_flag_the_documents_name_exists():
  known = _known_flags()
  assert {"out", "gin_file", "zone", "retrain", "compile_only"} <= known  # each source was read
  named = {(doc, flag) for doc, text in _doc_texts().items()
           for flag in re.findall(r"(?<![\w.-])--([a-z][a-z0-9_-]*)(?![\w.-])", text)}
  assert sorted((doc, f"--{flag}") for doc, flag in named if flag not in known) == []


def test_every_macro_the_documents_name_is_defined_by_a_gin_file():
  defined = _defined_macros()
  named = set()
  for doc, text in _doc_texts().items():
    named |= {(doc, m) for m in re.findall(r"--gin\.([A-Za-z_][A-Za-z0-9_]*)=", text)}
    if doc.endswith(".gin"):  # a header's bullet: "- NAME[, NAME] (...): ..."
      for bullet in re.findall(r"^# - (.*)$", text, re.M):
        before = re.sub(r"\([^)]*\)", "", bullet.split(":", 1)[0])
        named |= {(doc, m) for m in re.findall(r"(?<![\w-])[A-Z][A-Z0-9_]+(?![\w-])", before)}
  assert sorted((doc, m) for doc, m in named if m not in defined | PLACEHOLDERS) == []


def test_every_setting_the_documents_assign_is_a_macro_or_a_variable_the_code_reads():
  code = "\n".join(p.read_text() for folder in ("rospr_jax", "tasks") for p in (ROOT / folder).rglob("*.py"))
  code += (ROOT / "run_tpu.sh").read_text()
  defined = _defined_macros()
  named = {(doc, m) for doc, text in _doc_texts().items()
           for m in re.findall(r"(?<![\w.$-])([A-Z][A-Z0-9_]+)=", text)}
  unknown = [(doc, m) for doc, m in named
             if m not in defined and m not in LIBRARY_ENV and f'"{m}"' not in code and f"'{m}'" not in code]
  assert sorted(unknown) == []
