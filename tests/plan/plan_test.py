"""`rospr plan`: the run's own steps compiled ahead of time for a TPU topology (libtpu, no TPU needed) or
this process's devices, with the memory per device that the compiler reports."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import jax
import pytest

from rospr_jax.commands import plan as plan_command
from rospr_jax.eval import batching
from rospr_jax.library import embed
from rospr_jax.model import get_config, model_for, partitioning
from rospr_jax.plan import planner, remedies, report, steps, targets
from rospr_jax.commands import workload
from rospr_jax.prompt.train_step import default_optimizer, make_train_step

TINY = get_config("tiny")
ONE = partitioning.Partitioner(1)  # NUM_PARTITIONS 1 (a plan lays it over its target's devices)
needs_libtpu = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                  reason="libtpu is not installed (the `tpu` extra, scripts/setup.sh)")


def _train(batch_size: int) -> planner.TrainSettings:
  shapes = steps.TrainShapes(batch_size=batch_size, input_length=32, target_length=8, prompt_length=4,
                             num_sources=3)
  return planner.TrainSettings(shapes, dropout_rate=0.1, remat_policy="minimal", optimizer=default_optimizer())


EMBEDDING = planner.EmbeddingSettings(TINY, steps.EmbeddingShapes(batch_size=6, input_length=32), source="tiny")


@needs_libtpu
def test_tpu_plan_compiles_for_the_topology_and_its_memory_grows_with_the_batch():
  target = targets.resolve("v4-8")
  assert len(target.devices) == 4 and target.devices[0].platform == "tpu" and target.hosts == 1
  small, embedding = planner.plan(TINY, target, partitioner=ONE, scoring=steps.ScoringShapes(8, 64, 2, 16, 4),
                                  embedding=EMBEDDING)
  large, = planner.plan(TINY, target, partitioner=ONE, scoring=steps.ScoringShapes(128, 64, 2, 16, 4))
  assert small.fits and large.fits and small.hbm == 32 * 2**30
  # The batch (inputs [B, 64], targets [B, 2, 16], prompts [B, 4, 64] float32) is an argument split over
  # the 4 devices: a quarter of the 120 more rows at least (TPU layouts pad to tiles).
  assert large.arguments - small.arguments >= 120 * (64 + 32 + 4 * 64) * 4 // 4
  assert large.total > small.total and large.temporaries >= small.temporaries
  assert small.flops and large.flops > 8 * small.flops and large.seconds > small.seconds > 0
  # The library's embedding step (`Embedder`'s) at the build batch, rounded up to the 4 chips, the
  # retriever's encoder (float32 here) whole on every chip.
  assert embedding.step == "embed" and embedding.fits and embedding.shapes["batch_size"] == 8  # 6 -> 8
  assert embedding.shapes["retriever"] == "tiny" and embedding.flops and embedding.seconds > 0
  encoder = sum(x.size * x.dtype.itemsize for name, tree in model_for(TINY).abstract_params().items()
                if name in embed.ENCODER_PREFIXES for x in jax.tree.leaves(tree))
  assert embedding.arguments >= encoder


def test_plan_lowers_the_run_own_steps_with_the_run_partitioner():
  """The steps lowered are the ones `PromptTrainer`, `score_examples` and `Embedder` call: same jitted
  functions, partitioner (mesh, rules) and static arguments (a copy would compile something else than
  what runs)."""
  partitioner = partitioning.Partitioner(2, devices=jax.devices()[:4])
  model, optimizer = model_for(TINY), default_optimizer()
  train, lowered = steps.lower_train_step(model, optimizer, partitioner, _train(4).shapes, "unsafe_rbg")
  run_train = make_train_step(model, optimizer, partitioner=partitioner)
  assert train.jitted is run_train.jitted and train.partitioner is partitioner and train.static == run_train.static
  assert train.rules == partitioning.STANDARD_RULES and dict(train.mesh.shape) == {"data": 2, "model": 2}
  score, _ = steps.lower_scoring_step(model, partitioner, steps.ScoringShapes(4, 16, 2, 8, 4))
  run_score = batching.scoring_step(model, partitioner)
  assert score.jitted is run_score.jitted is batching.score_choices and score.static == run_score.static
  embedding, _ = steps.lower_embedding_step(model, partitioner, steps.EmbeddingShapes(4, 16))
  assert embedding.jitted is embed.mean_encoder_states and embedding.static == embed.embedding_step(model).static
  # The backbone's arguments carry the rules' shardings: a feed-forward kernel [H, F] split over `model`.
  wi = steps.abstract_params(model, partitioner)["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]
  assert wi.sharding.spec == jax.sharding.PartitionSpec(None, "model")
  (state, params, _, _), _ = lowered.args_info
  assert state.step.donated and not params["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"].donated


def test_local_plan_agrees_with_the_cpu_compile():
  shapes = steps.ScoringShapes(16, 32, 2, 8, 4)
  cost, = planner.plan(TINY, targets.resolve("local"), partitioner=partitioning.Partitioner(2), scoring=shapes)
  memory = steps.lower_scoring_step(model_for(TINY), partitioning.Partitioner(2), shapes)[1].compile().memory_analysis()
  assert (cost.arguments, cost.temporaries, cost.outputs) == (
      memory.argument_size_in_bytes, memory.temp_size_in_bytes, memory.output_size_in_bytes)
  assert cost.hbm_source == "this host's memory" and cost.fits and cost.shapes["num_partitions"] == 2


def test_model_parallel_split_is_refused_naming_the_dimension():
  small = get_config("small")  # 6 heads
  with pytest.raises(ValueError, match=r"NUM_PARTITIONS 4 does not divide the model's heads \(num_heads\), 6"):
    partitioning.check_partitions(small, 4, 8)
  partitioning.check_partitions(small, 2, 8)
  with pytest.raises(ValueError, match=r"^NUM_PARTITIONS 3 does not divide the 8 devices"):
    partitioning.check_partitions(small, 3, 8)


def test_verdict_says_by_how_much_a_step_does_not_fit():
  target = targets.Target("v5litepod-8", [None] * 8, targets.CHIPS["v5e"], 1)
  cost = report.StepCost("train", {}, arguments=6 * 2**30, temporaries=12 * 2**30, outputs=0, aliased=0, code=0,
                         hbm=16 * 2**30, hbm_source="TPU v5e HBM", flops=1e12, bytes_accessed=1e9,
                         seconds=None, seconds_source="", compile_seconds=1.0)
  assert not cost.fits
  assert report.verdict([cost], target).startswith("does not fit: the train step needs 18.00 GiB per device")
  assert "2.00 GiB too many" in report.verdict([cost], target)


def test_time_estimate_uses_the_compiler_optimum_only_when_plausible():
  target = targets.Target("v4-8", [], targets.CHIPS["v4"], 1)
  bound = 275e12 / 275e12  # 1 s of FLOPs at the v4 peak
  assert report.estimate_seconds(1.5, 275e12, 0.0, target) == (1.5, "compiler optimum")
  seconds, source = report.estimate_seconds(-1104.0, 275e12, 0.0, target)
  assert seconds == bound and source.startswith("bound at peak")
  seconds, source = report.estimate_seconds(0.1, 275e12, 0.0, target)  # faster than the peak allows
  assert seconds == bound and "implausible" in source


def _rospr(*argv: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "rospr_jax.cli", "plan", *argv], capture_output=True, text=True,
                        timeout=300)


def test_unknown_topology_is_one_line_and_exit_2():
  done = _rospr("--gin_file=models/tiny.gin", "--gin_file=prompt_tuning/train_jsonl.gin", "--topology", "v9-8")
  assert done.returncode == 2, done.stderr
  lines = done.stderr.strip().splitlines()
  assert len(lines) == 1
  assert lines[0].startswith("rospr plan: error: unknown topology 'v9-8'; use one of local, ")
  assert "v4-8" in lines[0] and not done.stdout


def test_a_checkpoint_at_a_url_is_one_line_naming_the_setting_not_a_missing_folder():
  """The plan reads a checkpoint's config where it is, without its weights: a URL (gs://) is refused in
  one line naming CHECKPOINT and what to do, not called missing with its scheme mangled (gs:/b/...)."""
  done = _rospr("--gin_file=models/checkpoint.gin", "--gin_file=prompt_tuning/train_jsonl.gin", "--topology",
                "local", "--gin.CHECKPOINT='gs://b/T0_3B'")
  assert done.returncode == 2 and not done.stdout, done.stderr
  assert done.stderr == ("rospr plan: error: CHECKPOINT gs://b/T0_3B is a URL: rospr plan reads the model's shape "
                         "from the checkpoint's config without its weights, in a local or mounted folder; mount the "
                         "bucket (gcsfuse) and give that path, or plan with the model file of its size "
                         "(models/t0_3b.gin).\n"), done.stderr


@needs_libtpu
def test_plan_command_writes_the_plan_for_a_tpu_slice(tmp_path):
  out = tmp_path / "plan.json"
  done = _rospr("--gin_file=models/tiny.gin", "--gin_file=prompt_tuning/train_jsonl.gin", "--topology",
                "v5litepod-8", "--gin.BATCH_SIZE=8", "--gin.INPUT_LENGTH=32", "--gin.TARGET_LENGTH=8",
                "--gin.PROMPT_LENGTH=4", "--out", str(out))
  assert done.returncode == 0, done.stderr
  assert "libtpu" not in done.stderr and "TPU_WORKER_HOSTNAMES" not in done.stderr  # its start-up noise
  plan = json.loads(out.read_text())
  assert plan["devices"] == 8 and plan["hosts"] == 1 and plan["fits"] and plan["device_kind"] == "TPU v5 lite"
  step, = plan["steps"]
  assert step["step"] == "train" and step["shapes"]["batch_size"] == 8 and step["hbm"] == 16 * 2**30
  assert done.stdout.strip().splitlines()[-1] == plan["verdict"] and plan["verdict"].startswith("fits: ")


def test_missing_libtpu_is_one_line(monkeypatch):
  monkeypatch.setattr(targets.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(ValueError, match=r"^--topology v4-8 compiles with libtpu, which is not installed: pip install"):
    targets.resolve("v4-8")


def test_help_names_the_topology_flag():
  done = subprocess.run([sys.executable, "-m", "rospr_jax.cli", "plan", "--help"], capture_output=True, text=True,
                        timeout=120)
  assert done.returncode == 0 and "--topology" in done.stdout and plan_command.PROG in done.stdout


@needs_libtpu
def test_a_step_over_the_hbm_is_refused_naming_the_batch():
  """The TPU compiler refuses a program over the device's HBM; the plan says so, with the bytes."""
  target = targets.resolve("v5litepod-1")
  too_big, = planner.plan(TINY, target, partitioner=ONE, scoring=steps.ScoringShapes(4096, 1024, 2, 256, 4))
  assert not too_big.fits and too_big.refused and too_big.required > 16 * 2**30
  line = report.verdict([too_big], target)
  assert line.startswith("does not fit: the scoring step needs at least ") and "lower BATCH_SIZE" in line


class _Device:  # what the rows per host read of a device
  def __init__(self, process_index: int):
    self.process_index = process_index


def test_projections_give_the_training_hours_and_the_rows_per_host():
  target = targets.Target("v4-32", [_Device(i // 4) for i in range(16)], targets.CHIPS["v4"], 4)
  cost = report.StepCost("train", {"batch_size": 64}, arguments=0, temporaries=0, outputs=0, aliased=0, code=0,
                         hbm=1, hbm_source="", flops=1.0, bytes_accessed=1.0, seconds=0.36,
                         seconds_source="compiler optimum", compile_seconds=1.0)
  hours, hosts = report.projections([cost], target, train_steps=20_000)
  assert hours.startswith("train: TRAIN_STEPS 20,000 x 0.36 s = 2.00 h at least (compiler optimum); 4.00 h at 50%")
  assert "4 hosts" in hosts and "rows per host: train 16" in hosts
  assert report.projections([cost], targets.Target("v4-8", [None] * 4, targets.CHIPS["v4"], 1), train_steps=None) == []


def test_train_prompts_refuses_a_split_of_the_heads_in_one_line(tmp_path):
  (tmp_path / "examples.jsonl").write_text(json.dumps({"source": "a", "inputs": [5, 6], "targets": [7, 1]}) + "\n")
  done = subprocess.run(
      [sys.executable, "-m", "rospr_jax.cli", "train-prompts", "--gin_file=models/tiny.gin",
       "--gin_file=prompt_tuning/train_jsonl.gin", f"--gin.MODEL_DIR='{tmp_path / 'run'}'", "--gin.TRAIN_STEPS=1",
       f"--gin.EXAMPLES_FILE='{tmp_path / 'examples.jsonl'}'", "--gin.NUM_PARTITIONS=8"],
      capture_output=True, text=True, timeout=300)
  assert done.returncode == 2 and "Traceback" not in done.stderr
  assert done.stderr.strip().splitlines()[-1] == (
      "rospr train-prompts: error: NUM_PARTITIONS 8 does not divide the model's heads (num_heads), 4.")


@needs_libtpu
def test_a_step_that_does_not_fit_names_the_remedy_that_fits():
  """Scoring 1,024 rows of 1,024 tokens on one v5e chip does not fit (about 21 GiB of 16; a single
  device: no model partitions to try), half the batch does (about 11 GiB): BATCH_SIZE 512 is named."""
  target = targets.resolve("v5litepod-1")
  shapes = steps.ScoringShapes(1024, 1024, 2, 256, 4)
  refused = report.StepCost("scoring", {}, arguments=0, temporaries=0, outputs=0, aliased=0, code=0,
                            hbm=16 * 2**30, hbm_source="TPU v5e HBM", flops=None, bytes_accessed=None, seconds=None,
                            seconds_source="", compile_seconds=1.0, refused="RESOURCE_EXHAUSTED", required=21 * 2**30)
  found = remedies.find_remedy(TINY, target, refused, partitioner=ONE, train=None, scoring=shapes)
  assert (found.macro, found.value) == ("BATCH_SIZE", 512) and found.cost.fits
  assert found.cost.shapes["batch_size"] == 512 and found.describe().startswith("BATCH_SIZE 512 fits (")
  line = report.verdict([refused], target, {"scoring": found.describe()})
  assert line.startswith("does not fit: the scoring step needs at least 21.00 GiB per device, more than v5litepod-1")
  assert f"({found.describe()})" in line


def test_remedies_are_tried_in_order():
  """More model partitions first (those that divide the model), then a stronger remat, then half the batch."""
  target = targets.Target("v4-8", list(range(8)), targets.CHIPS["v4"], 1)
  train = _train(32)
  tried = [(macro, value) for macro, value, _ in remedies._candidates(TINY, target, ONE, train, None)]  # pylint: disable=protected-access
  assert tried == [("NUM_PARTITIONS", 2), ("NUM_PARTITIONS", 4), ("REMAT_POLICY", "full"), ("BATCH_SIZE", 16),
                   ("BATCH_SIZE", 8)]


@pytest.mark.parametrize("num_partitions", [2, 4])
def test_backbone_bytes_per_device_are_the_split_the_rules_promise(num_partitions):
  """Kernels with a logical axis the rules map to `model` (vocab, mlp, heads, joined_kv) are split
  num_partitions ways; the rest (norm scales, position biases' buckets) are whole on every device."""
  from flax import linen as nn
  model = model_for(TINY)
  split_axes = {"vocab", "mlp", "heads", "joined_kv"}
  expected = 0
  for leaf in jax.tree.leaves(model.abstract_params(), is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)):
    nbytes = leaf.value.size * leaf.value.dtype.itemsize
    expected += nbytes // num_partitions if split_axes & set(leaf.names) else nbytes
  assert steps.per_device_bytes(steps.abstract_params(model, partitioning.Partitioner(num_partitions))) == expected
  assert expected < steps.per_device_bytes(steps.abstract_params(model, ONE))


def test_arguments_over_the_hbm_are_refused_without_compiling():
  chip = targets.Chip("a small chip", 2**20, 1e12, 1e11, "default")  # 1 MiB: the tiny backbone is more
  cost, = planner.plan(TINY, targets.Target("small-8", jax.devices(), chip, 1), partitioner=ONE, train=_train(8))
  assert not cost.fits and cost.compile_seconds == 0.0 and cost.required > 2**20
  assert cost.refused.startswith("not compiled: its arguments alone (backbone, state, batch) hold ")
  assert "| no (not compiled) |" in report.markdown([cost], targets.Target("small-8", jax.devices(), chip, 1))


@needs_libtpu
def test_multi_host_slice_compiles_the_global_program_and_says_the_rows_per_host():
  target = targets.resolve("v4-16")  # 8 chips on 2 hosts
  assert len(target.devices) == 8 and target.hosts == 2
  assert partitioning.Partitioner(2).for_devices(target.devices).rows_per_host(32) == {0: 16, 1: 16}
  cost, = planner.plan(TINY, target, partitioner=partitioning.Partitioner(2), scoring=steps.ScoringShapes(32, 64, 2, 16, 4))
  assert cost.fits and cost.shapes["num_partitions"] == 2
  line, = report.projections([cost], target, train_steps=None, partitioner=partitioning.Partitioner(2))
  assert line.startswith("v4-16 has 2 hosts: the command runs on every host (run_tpu.sh does it)")
  assert line.endswith("(rows per host: scoring 16)")


def test_workload_counts_the_held_out_targets_from_the_stated_sizes():
  every = workload.evaluation_workload(["held_out"])
  assert (every.examples, every.rows) == (116_088, 205_096)  # 3-choice ANLI / CB and 4-choice HellaSwag: 2 rows
  assert every.how.startswith("held_out: the published validation sizes")
  rte = workload.evaluation_workload(["super_glue_rte_GPT_3_style"])
  assert (rte.examples, rte.rows) == (277, 277)
  capped = workload.evaluation_workload(["held_out"], max_examples=100)
  assert capped.examples == 100 * 116 - (100 - 56) * 15 and "MAX_EXAMPLES 100" in capped.how
  generated = workload.evaluation_workload(["generated"])
  assert generated.examples > 0 and generated.rows == generated.examples and generated.how == "generated: counted"


def test_projections_give_the_evaluation_and_library_hours():
  target = targets.Target("v4-8", [None] * 4, targets.CHIPS["v4"], 1)

  def cost(step, batch, seconds, **shapes):
    return report.StepCost(step, {"batch_size": batch, **shapes}, arguments=0, temporaries=0, outputs=0, aliased=0,
                           code=0, hbm=1, hbm_source="", flops=1.0, bytes_accessed=1.0, seconds=seconds,
                           seconds_source="compiler optimum", compile_seconds=1.0)

  evaluation = workload.Workload(rows=64_000, examples=50_000, how="stated")
  scoring, embedding = report.projections(
      [cost("scoring", 64, 0.18), cost("embed", 128, 0.05, input_length=512)], target, train_steps=None,
      evaluation=evaluation, methods=5, library_texts=128_000)
  # 1,000 batches per method x 5 methods x 0.18 s = 900 s.
  assert scoring.startswith("evaluate: 50,000 examples in 64,000 rows (stated) x 5 methods = 5,000 batches of 64 x "
                            "0.18 s = 0.25 h at least (compiler optimum; every row at the largest bucket); 0.50 h")
  assert embedding.startswith("embed: 128,000 library texts = 1,000 batches of 128 x 0.05 s = 0.014 h at least")


def test_plan_command_plans_evaluation_with_its_embedding_step_and_hours(tmp_path, capsys, monkeypatch):
  """An evaluation run file plans the scoring step and the library's embedding step, with the hours
  for the examples given (in this process; the partitioner comes from the run file's gin binding). The
  steps compile for this process's 8 CPU devices, taken for v4 chips (their peaks give the seconds):
  a TPU compile of T0's largest bucket takes a minute on 2 busy cores, the CPU's seconds."""
  monkeypatch.setattr(targets, "resolve", lambda name: targets.Target(name, jax.devices(), targets.CHIPS["v4"], 1))
  out = tmp_path / "plan.json"
  code = plan_command.main(["--gin_file=models/tiny.gin", "--gin_file=eval/held_out_targets.gin", "--topology",
                            "local", "--gin.BATCH_SIZE=8", "--gin.NUM_PARTITIONS=2", "--eval_examples", "1000",
                            "--library_texts", "3000", "--out", str(out)])
  assert code == 0, capsys.readouterr().err
  plan = json.loads(out.read_text())
  assert [s["step"] for s in plan["steps"]] == ["scoring", "embed"] and plan["num_partitions"] == 2
  assert plan["steps"][0]["shapes"]["num_partitions"] == 2 and plan["steps"][1]["shapes"]["batch_size"] == 128
  assert plan["eval_examples"] == {"rows": 1000, "examples": 1000, "how": "--eval_examples", "methods": 5}
  assert plan["notes"][0].startswith("evaluate: 1,000 examples in 1,000 rows (--eval_examples) x 5 methods = 625 batches")
  assert plan["notes"][1].startswith("embed: 3,000 library texts = 24 batches of 128 x ")
