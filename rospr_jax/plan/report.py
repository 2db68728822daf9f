"""What a compiled step costs on a target: memory per device against its HBM, FLOPs, a time estimate.

From `compiled.memory_analysis()` (argument, temporary, output, aliased and code bytes, per device) and
`compiled.cost_analysis()` (per-device `flops`, `bytes accessed` and, from the TPU compiler,
`optimal_seconds`). The compiler's optimum is used only when it is positive and no faster than the
chip's peak allows (it was -1104 s for a rematerialized T0_3B step); otherwise the time is the bound
max(flops / peak FLOP/s, bytes accessed / HBM bandwidth), and the plan says which it gave.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from rospr_jax.plan.targets import GIB, Target


@dataclasses.dataclass(frozen=True)
class StepCost:
  """One compiled step on one device of a target (bytes, FLOPs, seconds).

  Attributes:
    step: "train", "scoring" or "embed"; shapes: its shapes (B, T, L, ...) and settings.
    arguments, temporaries, outputs, aliased, code: memory_analysis's bytes per device; aliased are
      outputs written into donated arguments (counted once).
    hbm: the bytes one device holds; hbm_source: where that figure comes from.
    flops, bytes_accessed: cost_analysis's per-device figures.
    seconds: the time estimate of one step; seconds_source: "compiler optimum" or "bound at peak".
    compile_seconds: how long the compile took here.
    refused: the compiler's out-of-memory message when it refused the step (the TPU compiler does, for
      a program over the device's HBM), else None; required: the bytes that message names.
  """
  step: str
  shapes: dict
  arguments: int
  temporaries: int
  outputs: int
  aliased: int
  code: int
  hbm: int
  hbm_source: str
  flops: float | None
  bytes_accessed: float | None
  seconds: float | None
  seconds_source: str
  compile_seconds: float
  refused: str | None = None
  required: int | None = None

  @property
  def total(self) -> int:
    """Bytes the step holds at once per device: arguments, temporaries, outputs not aliased, code (for a
    refused step, at least what the compiler said it needs)."""
    held = self.arguments + self.temporaries + self.outputs - self.aliased + self.code
    return max(held, self.required or 0)

  @property
  def fits(self) -> bool:
    return self.refused is None and self.total <= self.hbm

  def as_dict(self) -> dict[str, Any]:
    return {**dataclasses.asdict(self), "total": self.total, "fits": self.fits,
            "headroom": self.hbm - self.total}


def _number(costs: dict, key: str) -> float | None:
  value = costs.get(key)
  return float(value) if value is not None and math.isfinite(float(value)) else None


def step_cost(step: str, shapes: dict, compiled, target: Target, compile_seconds: float) -> StepCost:
  """The `StepCost` of a compiled step on `target`."""
  memory = compiled.memory_analysis()
  costs = compiled.cost_analysis() or {}
  if isinstance(costs, (list, tuple)):  # older JAX: one dict per computation
    costs = costs[0] if costs else {}
  flops, moved = _number(costs, "flops"), _number(costs, "bytes accessed")
  seconds, source = estimate_seconds(_number(costs, "optimal_seconds"), flops, moved, target)
  hbm, hbm_source = target.hbm_bytes
  return StepCost(step=step, shapes=shapes, arguments=int(memory.argument_size_in_bytes),
                  temporaries=int(memory.temp_size_in_bytes), outputs=int(memory.output_size_in_bytes),
                  aliased=int(memory.alias_size_in_bytes), code=int(memory.generated_code_size_in_bytes),
                  hbm=hbm, hbm_source=hbm_source, flops=flops, bytes_accessed=moved, seconds=seconds,
                  seconds_source=source, compile_seconds=compile_seconds)


_NEEDED = (re.compile(r"required for [^(]*\(([\d.]+)([KMGT])\) exceeds"),  # "... temporaries (48.00G) exceeds"
           re.compile(r"Used ([\d.]+)([KMGT]) of [\d.]+[KMGT] hbm"))
_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def is_out_of_memory(error: BaseException) -> bool:
  """Whether a compile failed because the step does not fit the device (XLA's RESOURCE_EXHAUSTED)."""
  return "RESOURCE_EXHAUSTED" in str(error) or "Ran out of memory" in str(error)


def refused_cost(step: str, shapes: dict, error: BaseException, target: Target, compile_seconds: float,
                 required: int | None = None) -> StepCost:
  """The `StepCost` of a step refused for want of memory, with the bytes the refusal names."""
  message = " ".join(str(error).split())
  if required is None:
    message = f"the compiler says: {message}"
  for pattern in _NEEDED if required is None else ():
    match = pattern.search(message)
    if match:
      required = int(float(match[1]) * _UNITS[match[2]])
      break
  hbm, hbm_source = target.hbm_bytes
  return StepCost(step=step, shapes=shapes, arguments=0, temporaries=0, outputs=0, aliased=0, code=0, hbm=hbm,
                  hbm_source=hbm_source, flops=None, bytes_accessed=None, seconds=None,
                  seconds_source="not compiled", compile_seconds=compile_seconds, refused=message[:400],
                  required=required)


def estimate_seconds(optimal: float | None, flops: float | None, moved: float | None,
                     target: Target) -> tuple[float | None, str]:
  """(seconds per step, how they were found): the compiler's optimum when positive and no faster than
  the peak bound, else the bound max(flops / peak, bytes / bandwidth); None where neither is known."""
  chip = target.chip
  bound = None
  if chip is not None and (flops or moved):
    bound = max((flops or 0.0) / chip.peak_flops, (moved or 0.0) / chip.hbm_bandwidth)
  if optimal is not None and optimal > 0 and (bound is None or optimal >= 0.9 * bound):
    return optimal, "compiler optimum"
  if bound is not None:
    why = "no compiler optimum" if optimal is None else f"compiler optimum {optimal:.3g} s implausible"
    return bound, f"bound at peak ({why})"
  return None, "unknown (no chip peak for this target)"


def verdict(costs: list[StepCost], target: Target, remedies: dict[str, str] | None = None) -> str:
  """One line: whether every step fits a device of `target`, and by how much; for a step that does not
  fit, what `remedies` says about it (the remedy found)."""
  worst = max(costs, key=lambda c: c.total / c.hbm)
  need, have = worst.total / GIB, worst.hbm / GIB
  where = f"{target.name} ({worst.hbm_source} {have:.2f} GiB per device)"
  if all(c.fits for c in costs):
    return (f"fits: the largest step ({worst.step}) needs {need:.2f} GiB per device on {where}, "
            f"{have - need:.2f} GiB to spare")
  worst = next((c for c in costs if not c.fits), worst)
  need, remedy = worst.total / GIB, (remedies or {}).get(worst.step) or REMEDIES[worst.step]
  if worst.refused is not None:
    at_least = f"at least {need:.2f} GiB per device, " if worst.required else ""
    return f"does not fit: the {worst.step} step needs {at_least}more than {where} ({remedy}); {worst.refused}"
  return (f"does not fit: the {worst.step} step needs {need:.2f} GiB per device on {where}, "
          f"{need - have:.2f} GiB too many ({remedy})")


REMEDIES = {"train": "lower BATCH_SIZE or INPUT_LENGTH, raise NUM_PARTITIONS, or set REMAT_POLICY 'minimal' / 'full'",
            "scoring": "lower BATCH_SIZE or raise NUM_PARTITIONS",
            "embed": "lower build-library's --tokens-per-batch or --max-length"}


def size(nbytes: int) -> str:
  """Bytes in GiB (two decimals), or MiB below 1 GiB."""
  return f"{nbytes / GIB:.2f} GiB" if nbytes >= GIB else f"{nbytes / 2**20:.2f} MiB"


def _rows_per_host(cost: StepCost, target: Target, partitioner) -> str:
  """The rows of the step's batch each host's devices hold (by the run's layout over the slice; the
  embedding step is data parallel), one number when every host holds as many."""
  from rospr_jax.model import partitioning  # pylint: disable=g-import-not-at-top
  layout = partitioner if partitioner is not None and cost.step != "embed" else partitioning.Partitioner(1)
  rows = sorted(set(layout.for_devices(target.devices).rows_per_host(cost.shapes["batch_size"]).values()))
  return str(rows[0]) if len(rows) == 1 else " / ".join(map(str, rows))


def projections(costs: list[StepCost], target: Target, *, train_steps: int | None,
                evaluation=None, methods: int | None = None, library_texts: int | None = None,
                partitioner=None) -> list[str]:
  """Lines on what the steps mean for the run, each a lower bound at the step's estimate (the compiler's
  optimum or the chip's peak) and at `UTILIZATION` of it: the training time of `train_steps`; the
  evaluation time of `evaluation` (a `workload.Workload`: its rows, at the largest bucket's step, an
  upper bound per row) scored by `methods` methods; the library's embedding of `library_texts` texts
  (at the largest bucket); on a multi-host slice, the rows each host feeds (by `partitioner`, the run's
  layout; default one model partition)."""
  lines = []
  by_step = {c.step: c for c in costs if c.seconds}
  train = by_step.get("train")
  if train is not None and train_steps:
    hours = train_steps * train.seconds / 3600
    lines.append(f"train: TRAIN_STEPS {train_steps:,} x {train.seconds:.3g} s = {hours:,.2f} h at least "
                 f"({train.seconds_source}); {hours / UTILIZATION:,.2f} h at {UTILIZATION:.0%} of it")
  scoring = by_step.get("scoring")
  if scoring is not None and evaluation is not None and evaluation.rows and methods:
    batches = math.ceil(evaluation.rows / scoring.shapes["batch_size"]) * methods
    hours = batches * scoring.seconds / 3600
    lines.append(f"evaluate: {evaluation.examples:,} examples in {evaluation.rows:,} rows ({evaluation.how}) x "
                 f"{methods} methods = {batches:,} batches of {scoring.shapes['batch_size']} x {scoring.seconds:.3g} s "
                 f"= {hours:,.2f} h at least ({scoring.seconds_source}; every row at the largest bucket); "
                 f"{hours / UTILIZATION:,.2f} h at {UTILIZATION:.0%} of it")
  embed = by_step.get("embed")
  if embed is not None and library_texts:
    batches = math.ceil(library_texts / embed.shapes["batch_size"])
    hours = batches * embed.seconds / 3600
    lines.append(f"embed: {library_texts:,} library texts = {batches:,} batches of {embed.shapes['batch_size']} x "
                 f"{embed.seconds:.3g} s = {hours:,.3f} h at least ({embed.seconds_source}; every text at "
                 f"{embed.shapes['input_length']} tokens); {hours / UTILIZATION:,.3f} h at {UTILIZATION:.0%} of it")
  if target.hosts > 1:
    rows = ", ".join(f"{c.step} {_rows_per_host(c, target, partitioner)}" for c in costs)
    lines.append(f"{target.name} has {target.hosts} hosts: the command runs on every host (run_tpu.sh "
                 f"does it), each feeding its share of every batch (rows per host: {rows})")
  return lines


# The share of the compiler's optimum a real step is taken to reach in projections.
UTILIZATION = 0.5


def _refusal(cost: StepCost) -> str:
  return "no (not compiled)" if cost.refused.startswith("not compiled") else "refused by the compiler"


def markdown(costs: list[StepCost], target: Target) -> str:
  """A table: one row per step, GiB per device, FLOPs and seconds per step."""
  rows = ["| step | shapes | arguments | temporaries | outputs | total | HBM | fits | "
          "TFLOPs/step | s/step | estimate | compile s |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for c in costs:
    shapes = ", ".join(f"{k} {v}" for k, v in c.shapes.items())
    flops = "" if c.flops is None else f"{c.flops / 1e12:.3g}"
    seconds = "" if c.seconds is None else f"{c.seconds:.3g}"
    parts = ("", "", "") if c.refused else (size(c.arguments), size(c.temporaries), size(c.outputs))
    rows.append(f"| {c.step} | {shapes} | {' | '.join(parts)} | "
                f"{'>= ' if c.refused else ''}{size(c.total)} | {size(c.hbm)} | "
                f"{'yes' if c.fits else _refusal(c) if c.refused else 'no'} | "
                f"{flops} | {seconds} | {c.seconds_source} | {c.compile_seconds:.1f} |")
  return f"Plan for {target.name}: {len(target.devices)} devices, {target.hosts} host(s)\n\n" + "\n".join(rows)
