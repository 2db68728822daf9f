"""The launch settings of a multi-process run (rospr_jax/distributed.py): read from the environment,
and inconsistent ones refused through the CLI with one line and exit code 2, before JAX starts."""

from __future__ import annotations

import pytest

from mp_workers import LAUNCH_VARIABLES, load_test_module

from rospr_jax import cli, distributed

EXPLICIT = {"JAX_COORDINATOR_ADDRESS": "127.0.0.1:8476", "ROSPR_NUM_PROCESSES": "2", "ROSPR_PROCESS_ID": "1"}


@pytest.mark.parametrize("environ,expected", [
    ({}, None),
    ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:8476"}, None),  # alone it asks for nothing
    ({"ROSPR_MULTIHOST": "0"}, None),
    ({**EXPLICIT, "ROSPR_NUM_PROCESSES": "1", "ROSPR_PROCESS_ID": "0"}, None),  # one process
    ({"ROSPR_NUM_PROCESSES": "1"}, None),  # a batch script's count of one asks for nothing either
    (EXPLICIT, distributed.Launch("127.0.0.1:8476", 2, 1, False)),
    ({**EXPLICIT, "ROSPR_INIT_TIMEOUT": "30", "ROSPR_HEARTBEAT_TIMEOUT": "20", "ROSPR_SHUTDOWN_TIMEOUT": "40"},
     distributed.Launch("127.0.0.1:8476", 2, 1, False, 30, 20, 40)),
    ({"ROSPR_MULTIHOST": "1"}, distributed.Launch(None, None, None, True)),  # JAX detects the rest
    ({"ROSPR_MULTIHOST": "1", "ROSPR_PROCESS_ID": "3"}, distributed.Launch(None, None, 3, True)),
    ({**EXPLICIT, "JAX_COORDINATOR_ADDRESS": "node-7.cluster:1234"},
     distributed.Launch("node-7.cluster:1234", 2, 1, False)),
])
def test_settings_from_the_environment(environ, expected):
  assert distributed.launch_settings(environ) == expected


@pytest.mark.parametrize("environ,message", [
    ({"ROSPR_NUM_PROCESSES": "2", "ROSPR_PROCESS_ID": "0"},
     "an explicit launch needs JAX_COORDINATOR_ADDRESS, ROSPR_NUM_PROCESSES and ROSPR_PROCESS_ID; "
     "JAX_COORDINATOR_ADDRESS is not set (or set ROSPR_MULTIHOST=1 for JAX's cluster auto-detection)."),
    ({"ROSPR_PROCESS_ID": "0"},
     "an explicit launch needs JAX_COORDINATOR_ADDRESS, ROSPR_NUM_PROCESSES and ROSPR_PROCESS_ID; "
     "JAX_COORDINATOR_ADDRESS, ROSPR_NUM_PROCESSES are not set (or set ROSPR_MULTIHOST=1 for JAX's "
     "cluster auto-detection)."),
    ({**EXPLICIT, "ROSPR_PROCESS_ID": "2"},
     "ROSPR_PROCESS_ID=2 is out of range: ROSPR_NUM_PROCESSES=2 processes are numbered 0 .. 1."),
    ({**EXPLICIT, "ROSPR_NUM_PROCESSES": "two"}, "ROSPR_NUM_PROCESSES='two' must be an integer >= 1."),
    ({**EXPLICIT, "ROSPR_NUM_PROCESSES": "0"}, "ROSPR_NUM_PROCESSES='0' must be an integer >= 1."),
    ({**EXPLICIT, "ROSPR_PROCESS_ID": "-1"}, "ROSPR_PROCESS_ID='-1' must be an integer >= 0."),
    ({**EXPLICIT, "ROSPR_INIT_TIMEOUT": "0"}, "ROSPR_INIT_TIMEOUT='0' must be an integer >= 1."),
    ({**EXPLICIT, "JAX_COORDINATOR_ADDRESS": "127.0.0.1"},
     "JAX_COORDINATOR_ADDRESS='127.0.0.1' must be HOST:PORT, e.g. 10.0.0.1:8476."),
    ({**EXPLICIT, "JAX_COORDINATOR_ADDRESS": "127.0.0.1:70000"},
     "JAX_COORDINATOR_ADDRESS='127.0.0.1:70000': the port must be in 1..65535."),
    ({"ROSPR_MULTIHOST": "yes"}, "ROSPR_MULTIHOST='yes' must be 1 (JAX's cluster auto-detection) or 0."),
])
def test_inconsistent_settings_are_refused_in_one_line(monkeypatch, capsys, environ, message):
  for name in LAUNCH_VARIABLES:
    monkeypatch.delenv(name, raising=False)
  for name, value in environ.items():
    monkeypatch.setenv(name, value)
  assert cli.main(["score", "--checkpoint", "unused", "--input", "x", "--choice", "y"]) == 2
  captured = capsys.readouterr()
  assert captured.err == f"rospr score: {message}\n" and captured.out == ""


run_tpu = load_test_module("run_tpu_test.py")
fake_cloud = run_tpu.fake_cloud  # the fixture: run_tpu.sh against a fake gcloud


def test_run_tpu_passes_the_launch_timeouts_to_every_worker(fake_cloud, monkeypatch):
  run, state = fake_cloud
  monkeypatch.setenv("ROSPR_HEARTBEAT_TIMEOUT", "20")
  monkeypatch.delenv("ROSPR_INIT_TIMEOUT", raising=False)
  (state / "created").touch()
  done = run("--name", "vm", "--zone", "z", "--no-install", "--", "evaluate", hosts=2)
  assert done.returncode == 0, done.stderr
  command = run_tpu._lines(state / "calls.jsonl")[-1]
  command = command[command.index("--command") + 1]
  assert "ROSPR_HEARTBEAT_TIMEOUT=20 ROSPR_MULTIHOST=1 .venv/bin/rospr evaluate" in command
  assert "ROSPR_INIT_TIMEOUT" not in command
