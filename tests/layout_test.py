"""The package layout of docs/design.md, read from the code's own imports (ast, every import statement,
module level or inside functions): compute never imports data, no package imports in a circle, and no
layer imports one above it."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Layers, lowest first. A package may import its own layer's package and the layers below; compute
# packages (COMPUTE) never import data, tasks, seqio or TensorFlow.
LAYERS = (
    ("rospr_jax.supervisor", "rospr_jax.platforms", "rospr_jax.config_fields", "rospr_jax.registry"),
    ("rospr_jax.storage", "rospr_jax.distributed", "rospr_jax.multihost", "rospr_jax.preemption"),
    ("rospr_jax.model",),
    ("rospr_jax.tokenization",),
    ("rospr_jax.backbone",),
    ("rospr_jax.prompt", "rospr_jax.library", "rospr_jax.data", "rospr_jax.eval"),
    ("rospr_jax.retrieval",),
    ("rospr_jax.pipeline",),
    ("rospr_jax.plan",),
    ("rospr_tasks",),
    ("rospr_jax.gin_cli",),
    ("rospr_jax.commands",),
    ("rospr_jax.cli",),
)
COMPUTE = ("rospr_jax.model", "rospr_jax.tokenization", "rospr_jax.backbone", "rospr_jax.prompt",
           "rospr_jax.library", "rospr_jax.retrieval", "rospr_jax.eval", "rospr_jax.pipeline", "rospr_jax.plan")
# One-way flow between the steps, beyond what the layers say: retrieval gets VAR's predictions as a
# callable (made by eval, handed over by the pipeline) and never imports eval; eval scores what it is
# given and never imports retrieval or the library. `rospr_jax.pipeline` composes them.
NEVER_IMPORTS = {
    "rospr_jax.retrieval": ("rospr_jax.eval",),
    "rospr_jax.eval": ("rospr_jax.retrieval", "rospr_jax.library"),
}
FORBIDDEN_IN_COMPUTE = ("rospr_jax.data", "rospr_tasks", "seqio", "tensorflow", "tensorflow_datasets",
                        "tensorflow_text")


def module_files() -> dict[str, pathlib.Path]:
  """{module name: file} of the installed packages (`tasks/` installs as `rospr_tasks`)."""
  files = {}
  for folder, package in ((ROOT / "rospr_jax", "rospr_jax"), (ROOT / "tasks", "rospr_tasks")):
    for path in folder.rglob("*.py"):
      parts = [package, *path.relative_to(folder).with_suffix("").parts]
      if parts[-1] == "__init__":
        parts = parts[:-1]
      files[".".join(parts)] = path
  return files


def imports_of(module: str, path: pathlib.Path) -> set[str]:
  """Every module named by an import statement anywhere in the file, relative imports resolved."""
  names = set()
  is_package = path.name == "__init__.py"
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = module.split(".")[:len(module.split(".")) - node.level + is_package]
        base = ".".join(anchor + ([base] if base else []))
      names.add(base)
      names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
  return names


def owner(name: str, prefixes) -> str | None:
  """The longest prefix (a package or module of `prefixes`) that `name` is or lies in."""
  hits = [p for p in prefixes if name == p or name.startswith(p + ".")]
  return max(hits, key=len) if hits else None


def layer_of(name: str) -> int | None:
  for level, packages in enumerate(LAYERS):
    if owner(name, packages):
      return level
  return None


def project_graph(files: dict[str, pathlib.Path]) -> dict[str, set[str]]:
  """{module: project modules it imports}."""
  graph = {}
  for module, path in files.items():
    graph[module] = {owner(name, files) for name in imports_of(module, path) if owner(name, files)}
    graph[module].discard(module)
  return graph


def violations(files: dict[str, pathlib.Path]) -> list[str]:
  problems = []
  for module, path in files.items():
    if module == "rospr_jax":  # the package's face: it imports nothing
      if imports_of(module, path) - {"__future__", "__future__.annotations"}:
        problems.append(f"rospr_jax/__init__.py imports {sorted(imports_of(module, path))}")
      continue
    level = layer_of(module)
    if level is None:
      problems.append(f"{module}: in no layer of tests/layout_test.py (add it, and to docs/design.md)")
      continue
    for name in sorted(imports_of(module, path)):
      if owner(module, COMPUTE) and owner(name, FORBIDDEN_IN_COMPUTE):
        problems.append(f"{module} (compute) imports {name}")
      package = owner(module, NEVER_IMPORTS)
      never = package and owner(name, NEVER_IMPORTS[package])
      if never:
        problems.append(f"{module} imports {name}: {package} never imports {never}")
      target = owner(name, files)
      if target is None or target == module:
        continue
      target_level = layer_of(target)
      own_package = owner(module, LAYERS[level])
      if target_level is not None and target_level > level:
        problems.append(f"{module} (layer {level}) imports {target} (layer {target_level}, above)")
      elif target_level == level and owner(target, LAYERS[level]) != own_package:
        problems.append(f"{module} imports {target}, a sibling package of the same layer")
  return problems


def package_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Cycles between files (a file importing one that imports it back, at any distance)."""
  cycles, state = [], {}

  def visit(node, stack):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == "open":
        cycles.append(stack[stack.index(nxt):] + [nxt])
      elif nxt not in state:
        visit(nxt, stack)
    stack.pop()
    state[node] = "done"

  for node in sorted(graph):
    if node not in state:
      visit(node, [])
  return cycles


def test_layers_hold():
  assert violations(module_files()) == []


def test_no_module_imports_in_a_circle():
  graph = project_graph(module_files())
  # A package's __init__ that re-exports its modules is not a circle with them.
  for module in graph:
    graph[module] = {t for t in graph[module] if not module.startswith(t + ".")}
  assert package_cycles(graph) == []


def test_the_check_fails_on_a_forbidden_import(tmp_path, monkeypatch):
  """Mutation check: the same walk over a copy with one forbidden import added reports it."""
  files = module_files()
  mutated = tmp_path / "scoring.py"
  mutated.write_text(files["rospr_jax.eval.scoring"].read_text()
                     + "\n\ndef _leak():\n  from rospr_jax.data import prompted\n  import seqio\n")
  cyclic = tmp_path / "config.py"
  cyclic.write_text(files["rospr_jax.model.config"].read_text() + "\nfrom rospr_jax.model import t5\n")
  upward = tmp_path / "t5.py"
  upward.write_text(files["rospr_jax.model.t5"].read_text() + "\nfrom rospr_jax.eval import report\n")
  # The one-way flow: VAR's scorer imported by a rule, retrieval or the library imported by the scorer.
  back = tmp_path / "selection.py"
  back.write_text(files["rospr_jax.retrieval.selection"].read_text()
                  + "\n\ndef _score():\n  from rospr_jax.eval import var\n")
  across = tmp_path / "var.py"
  across.write_text(files["rospr_jax.eval.var"].read_text()
                    + "\nfrom rospr_jax.retrieval import selection\nfrom rospr_jax.library import sources\n")
  changed = {**files, "rospr_jax.eval.scoring": mutated, "rospr_jax.model.config": cyclic,
             "rospr_jax.model.t5": upward, "rospr_jax.retrieval.selection": back,
             "rospr_jax.eval.var": across}
  problems = violations(changed)
  assert "rospr_jax.eval.scoring (compute) imports rospr_jax.data.prompted" in problems
  assert "rospr_jax.eval.scoring (compute) imports seqio" in problems
  assert "rospr_jax.model.t5 (layer 2) imports rospr_jax.eval.report (layer 5, above)" in problems
  assert ("rospr_jax.retrieval.selection imports rospr_jax.eval.var: rospr_jax.retrieval never imports "
          "rospr_jax.eval") in problems
  assert ("rospr_jax.eval.var imports rospr_jax.retrieval.selection: rospr_jax.eval never imports "
          "rospr_jax.retrieval") in problems
  assert ("rospr_jax.eval.var imports rospr_jax.library.sources: rospr_jax.eval never imports "
          "rospr_jax.library") in problems
  assert any(c[0] in ("rospr_jax.model.config", "rospr_jax.model.t5")
             for c in package_cycles(project_graph(changed)))


@pytest.mark.parametrize("command", ["fetch", "tasks", "convert", "score", "train-prompts", "build-library",
                                     "retrieve", "evaluate", "demo"])
def test_every_command_is_one_module_of_commands(command):
  from rospr_jax import cli
  assert command in cli.COMMANDS
  assert cli.command_module(command) in module_files()
