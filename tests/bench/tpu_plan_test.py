"""bench/tpu_plan.py: the TPU matrix it runs (`rospr plan` per cell) and bench/TPU_PLAN.md, which must be
what it renders from the plans kept in bench/tpu_plan/ (the measured evidence)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import tpu_plan  # noqa: E402  pylint: disable=g-import-not-at-top


def _full_matrix() -> list[tuple]:
  import argparse  # pylint: disable=g-import-not-at-top
  return tpu_plan.cells(argparse.Namespace(models=list(tpu_plan.MODELS), topologies=tpu_plan.TOPOLOGIES,
                                           remat=tpu_plan.REMAT, partitions=tpu_plan.PARTITIONS,
                                           steps=["train", "eval"]))


def test_tpu_plan_md_is_rendered_from_the_kept_plans():
  measured = tpu_plan.load_cells()
  assert "t0_3b_v4-8_train_np1_minimal" in measured and "t0pp_v3-8_train_np4_minimal" in measured
  assert (ROOT / "bench" / "TPU_PLAN.md").read_text() == tpu_plan.render(measured, _full_matrix())


def test_the_matrix_skips_model_axes_a_slice_cannot_hold():
  matrix = _full_matrix()
  assert ("t0_3b", "v4-8", "train", 8, "none") not in matrix  # 4 chips
  assert ("t0pp", "v3-8", "train", 8, "full") in matrix and ("t0pp", "v4-32", "eval", 8, None) in matrix
  assert len(matrix) == 2 * (3 * 4 * 4 + 2 * 3 * 4)  # 8- and 16-device slices x 4 NUM_PARTITIONS, 4-chip x 3


def test_dry_run_prints_the_rospr_plan_lines_of_the_cells():
  done = subprocess.run([sys.executable, str(ROOT / "bench" / "tpu_plan.py"), "--dry_run", "--models", "t0pp",
                         "--topologies", "v4-8", "--partitions", "2", "--remat", "full", "--rerun"],
                        capture_output=True, text=True, timeout=60, cwd=ROOT)
  assert done.returncode == 0, done.stderr
  train, evaluation = done.stdout.strip().splitlines()
  assert train.startswith("-m rospr_jax.cli plan --gin_file=models/t0.gin --gin_file=prompt_tuning/train_seqio.gin "
                          "--topology v4-8 --gin.NUM_PARTITIONS=2 --no_search")
  assert "--gin.REMAT_POLICY='full'" in train and "--gin_file=eval/paper.gin" in evaluation
