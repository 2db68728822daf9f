"""Helpers of the multi-process tests: real `rospr` processes joined into one JAX runtime on this
machine, N workers (2 CPU devices each) on a free loopback port, each a `python -m rospr_jax.cli`
subprocess with its own output files. (A module of its own name: `conftest` is ambiguous in tests/.)"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib
import socket
import subprocess
import sys
import time
from typing import Callable

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Small enough that a stuck run fails the test quickly, large enough for 2 busy cores.
TIMEOUTS = {"ROSPR_INIT_TIMEOUT": "60", "ROSPR_HEARTBEAT_TIMEOUT": "10", "ROSPR_SHUTDOWN_TIMEOUT": "60"}
LAUNCH_VARIABLES = ("ROSPR_MULTIHOST", "JAX_COORDINATOR_ADDRESS", "ROSPR_NUM_PROCESSES", "ROSPR_PROCESS_ID")


def load_test_module(relative: str):
  """Another test file's module (its helpers), by path: tests/ is no package."""
  path = ROOT / "tests" / relative
  spec = importlib.util.spec_from_file_location(f"_mp_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def worker_env(devices: int, **extra: str) -> dict[str, str]:
  """The environment of one worker: CPU only, `devices` CPU devices, no inherited launch settings
  (tests/conftest.py's 8 forced host devices are dropped: JAX_NUM_CPU_DEVICES says how many)."""
  env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
  flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
  env.update(XLA_FLAGS=" ".join(flags), JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices),
             PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2", **TIMEOUTS)
  env.update(extra)
  return env


@dataclasses.dataclass
class Worker:
  """One running `rospr` process."""
  process: subprocess.Popen
  out_path: pathlib.Path
  err_path: pathlib.Path
  started: float
  code: int | None = None
  seconds: float | None = None

  @property
  def out(self) -> str:
    return self.out_path.read_text(errors="replace")

  @property
  def err(self) -> str:
    return self.err_path.read_text(errors="replace")

  def wait(self, timeout: float) -> int:
    self.code = self.process.wait(timeout)
    self.seconds = time.time() - self.started
    return self.code


class Launcher:
  """Starts `rospr` commands as N joined processes (or one plain process) and waits for them."""

  def __init__(self, logs: pathlib.Path):
    self.logs = logs
    self.runs = 0
    self.workers: list[Worker] = []

  def start(self, argv: list[str] | Callable[[int], list[str]], processes: int = 2, devices: int = 2,
            **env: str) -> list[Worker]:
    """Starts `rospr ARGV` as `processes` workers of `devices` CPU devices each (1: no launch
    settings at all, a plain run); a callable `argv` gives each process index its own."""
    self.runs += 1
    port = free_port()
    workers = []
    for index in range(processes):
      launch = {} if processes == 1 else {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                                          "ROSPR_NUM_PROCESSES": str(processes),
                                          "ROSPR_PROCESS_ID": str(index)}
      out = self.logs / f"run{self.runs}_p{index}.out"
      err = self.logs / f"run{self.runs}_p{index}.err"
      with open(out, "wb") as o, open(err, "wb") as e:
        line = argv(index) if callable(argv) else argv
        process = subprocess.Popen([sys.executable, "-m", "rospr_jax.cli", *map(str, line)], cwd=ROOT,
                                   env=worker_env(devices, **launch, **env), stdout=o, stderr=e)
      workers.append(Worker(process, out, err, time.time()))
    self.workers += workers
    return workers

  def wait(self, workers: list[Worker], timeout: float = 240) -> list[Worker]:
    deadline = time.time() + timeout
    for worker in workers:
      try:
        worker.wait(max(1.0, deadline - time.time()))
      except subprocess.TimeoutExpired:
        self.kill(workers)
        pytest.fail(f"rospr did not finish within {timeout} s:\n" + describe(workers))
    return workers

  def run(self, argv: list[str], processes: int = 2, devices: int = 2, timeout: float = 240,
          **env: str) -> list[Worker]:
    """Runs `rospr ARGV` to the end; fails the test unless every worker exits with 0."""
    workers = self.wait(self.start(argv, processes, devices, **env), timeout)
    if any(w.code != 0 for w in workers):
      pytest.fail(f"rospr {argv[0]} failed:\n" + describe(workers))
    return workers

  @staticmethod
  def kill(workers: list[Worker]) -> None:
    for worker in workers:
      if worker.process.poll() is None:
        worker.process.kill()
        worker.process.wait()


def describe(workers: list[Worker]) -> str:
  return "\n".join(f"--- process {i}: exit {w.process.poll()}\nstdout: {w.out[-1500:]}\n"
                   f"stderr: {w.err[-3000:]}" for i, w in enumerate(workers))
