"""Methods are objects (`rospr_jax.pipeline.methods`): no module outside it writes a method's name as a
string or compares a value with one of the names it exports (read from the code's own syntax, ast).
The rules' labels are written where the rules are registered (`rospr_jax.retrieval.selection`)."""

from __future__ import annotations

import ast
import pathlib

from rospr_jax.pipeline import methods

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Where the names are written: the methods, and the rules whose labels name their methods.
OWNERS = (ROOT / "rospr_jax" / "pipeline" / "methods.py", ROOT / "rospr_jax" / "retrieval" / "selection.py")
# The names the methods module exports (and `pipeline.evaluate`'s aliases of them).
EXPORTED = ("HARD_PROMPT", "ORACLE", "CHANCE", "ROSPR", "RANDOM")


def _exported_name(node: ast.AST) -> str | None:
  """`HARD_PROMPT`, `evaluate.ORACLE`, `methods.CHANCE.name`, ...: the exported name it reads, or None."""
  while isinstance(node, ast.Attribute) and node.attr == "name":
    node = node.value
  name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
  return name if name in EXPORTED else None


def problems_of(path: pathlib.Path, names: set[str]) -> list[str]:
  """Each string equal to a method's name, and each comparison with an exported name, in `path`."""
  found = []
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
      found.append(f"{path.relative_to(ROOT)}:{node.lineno} writes the method name {node.value!r}")
    elif isinstance(node, ast.Compare):
      compared = [n for n in [node.left, *node.comparators, *(e for c in node.comparators
                                                              if isinstance(c, (ast.Tuple, ast.List, ast.Set))
                                                              for e in c.elts)] if _exported_name(n)]
      found += [f"{path.relative_to(ROOT)}:{node.lineno} compares with {_exported_name(n)}" for n in compared]
  return found


def module_paths() -> list[pathlib.Path]:
  """Every module of the package and of the tasks, but the two that write the names."""
  paths = sorted((ROOT / "rospr_jax").rglob("*.py")) + sorted((ROOT / "tasks").rglob("*.py"))
  return [p for p in paths if p not in OWNERS]


def method_names() -> set[str]:
  return {m.name for m in methods.all_methods()}


def test_no_module_outside_the_methods_names_or_compares_a_method():
  assert method_names() >= {"T0", "Oracle (labels)", "chance", "Random", "RoSPr", "INTER+VAR"}
  problems = [p for path in module_paths() for p in problems_of(path, method_names())]
  assert problems == []


def test_the_check_finds_a_method_name_and_a_comparison(tmp_path, monkeypatch):
  """Mutation check: a module comparing with a name, written or exported, is reported."""
  monkeypatch.setattr("method_names_test.ROOT", tmp_path)
  leak = tmp_path / "leak.py"
  leak.write_text("from rospr_jax.pipeline import evaluate\n\n\ndef f(method, m):\n"
                  "  if method == 'T0':\n    return 1\n"
                  "  return m in (evaluate.ORACLE, 'x') or m != methods.CHANCE.name\n")
  assert problems_of(leak, method_names()) == [
      "leak.py:5 writes the method name 'T0'", "leak.py:7 compares with ORACLE", "leak.py:7 compares with CHANCE"]
