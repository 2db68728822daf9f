"""The README's gin-configured commands parse as written: every required macro is set and every
`--gin.NAME` is one the files define (running them needs T0 and P3, which these machines lack)."""

from __future__ import annotations

import pathlib
import re
import shlex

import pytest

from rospr_jax import gin_cli

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def readme_commands(name: str) -> list[list[str]]:
  """The argv of every `rospr NAME ...` line of the README's bash blocks (continuations joined)."""
  blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
  lines = " ".join(blocks).replace("\\\n", " ").splitlines()
  found = []
  for line in lines:
    words = shlex.split(line, comments=True)
    if name in words:
      found.append([w for w in words[words.index(name) + 1:] if w != "..."])  # "...": elided flags
  return found


@pytest.mark.parametrize("name", ["train-prompts", "evaluate"])
def test_readme_gin_commands_parse(name):
  import gin
  from rospr_jax.prompt import trainer  # noqa: F401  (registers the configurables)
  commands = readme_commands(name)
  assert commands, f"no `rospr {name}` in the README"
  for argv in commands:
    args, bindings = gin_cli.parse_args(argv, f"rospr {name}", "", "x.gin")
    try:
      gin_cli.parse_gin(args.gin_file, bindings, [])
    finally:
      gin.clear_config()
