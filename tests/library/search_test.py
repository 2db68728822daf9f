"""Exact search against a full sort, and ScaNN's recall against exact search."""

from __future__ import annotations

import numpy as np
import pytest

from rospr_jax.library import search


def _reference(db, queries, k, metric):
  """Full argsort of every score: the independent reference."""
  q = queries / np.linalg.norm(queries, axis=1, keepdims=True) if metric == "cosine" else queries
  scores = q.astype(np.float64) @ db.astype(np.float64).T
  order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  return order, np.take_along_axis(scores, order, axis=1)


@pytest.mark.parametrize("metric", ["cosine", "dot"])
def test_exact_search_equals_full_sort_across_shards_and_blocks(metric):
  rng = np.random.default_rng(0)
  db = rng.normal(size=(1000, 24)).astype(np.float32)
  if metric == "cosine":
    db = search.normalize(db)
  queries = rng.normal(size=(37, 24)).astype(np.float32) * 3.0
  shards = [db[:300], db[300:301], db[301:]]
  searcher = search.ExactSearcher(shards, metric=metric, block_rows=128, query_block=16)
  ids, scores = searcher.search(queries, 10)
  ref_ids, ref_scores = _reference(db, queries, 10, metric)
  np.testing.assert_array_equal(ids, ref_ids)
  np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)
  assert ids.dtype == np.int64 and scores.dtype == np.float32


def test_exact_search_ties_go_to_smaller_id():
  db = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]], np.float32)
  ids, _ = search.ExactSearcher([db[:2], db[2:]], block_rows=1).search([[1.0, 0.0]], 3)
  assert ids.tolist() == [[0, 2, 3]]


def test_exact_search_errors():
  searcher = search.ExactSearcher(np.eye(3, dtype=np.float32))
  with pytest.raises(ValueError, match="k = 4 exceeds the library size 3"):
    searcher.search(np.eye(3), 4)
  with pytest.raises(ValueError, match="queries have dimension 2; the library has dimension 3"):
    searcher.search(np.ones((1, 2)), 1)
  with pytest.raises(ValueError, match="Cannot normalize row 1: it is the zero vector"):
    searcher.search(np.array([[1.0, 0, 0], [0, 0, 0]]), 1)
  with pytest.raises(ValueError, match="Unknown metric 'l2'"):
    search.ExactSearcher(np.eye(3, dtype=np.float32), metric="l2")


def test_auto_mode_follows_library_size():
  config = search.ScannConfig()
  assert config.resolve(5_000, 10)["mode"] == "brute_force"
  ah = config.resolve(50_000, 10)
  assert ah["mode"] == "ah" and ah["reorder"] == 250 and ah["training_sample_size"] == 50_000
  tree = config.resolve(1_000_000, 10)
  assert tree["mode"] == "tree_ah"
  assert tree["num_leaves"] == 1000 and tree["num_leaves_to_search"] == 30
  assert tree["training_sample_size"] == 250_000 and tree["reorder"] == 250
  assert config.resolve(10_000_000, 10)["training_sample_size"] == 250 * 3162
  assert search.ScannConfig().resolve(1_000_000, 20)["reorder"] == 500
  forced = search.ScannConfig(mode="tree_ah", num_leaves=7, num_leaves_to_search=3).resolve(500, 5)
  assert (forced["mode"], forced["num_leaves"], forced["num_leaves_to_search"]) == ("tree_ah", 7, 3)
  with pytest.raises(ValueError, match="Unknown ScaNN mode 'hnsw'"):
    search.ScannConfig(mode="hnsw").resolve(10, 1)


def test_recall_at_k():
  assert search.recall_at_k([[1, 2, 3], [4, 5, 6]], [[3, 2, 1], [4, 7, 8]]) == pytest.approx(4 / 6)


def test_recall_with_ties_counts_duplicate_rows():
  # Rows 0 and 2 are the same vector: returning either is as good.
  db = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.6, 0.8]], np.float32)
  queries = np.array([[1.0, 0.0]], np.float32)
  ids, scores = search.ExactSearcher(db).search(queries, 2)  # [[0, 2]], scores [1, 1]
  assert search.recall_at_k([[2, 3]], ids) == 0.5
  assert search.recall_with_ties(queries, db, [[2, 0]], scores) == 1.0
  assert search.recall_with_ties(queries, db, [[2, 3]], scores) == 0.5  # 0.6 < 1.0


@pytest.mark.parametrize("config", [
    search.ScannConfig(mode="brute_force"),
    search.ScannConfig(mode="ah"),
    search.ScannConfig(mode="tree_ah", num_leaves=60, num_leaves_to_search=6),
], ids=["brute_force", "ah", "tree_ah"])
def test_scann_recall_on_clustered_vectors(config, tmp_path, clustered):
  db, queries = clustered(8_000, 64, num_centres=200, noise=0.3, seed=1, num_queries=200)
  exact_ids, exact_scores = search.ExactSearcher(db).search(queries, 10)
  index = search.ScannSearcher.build(db, metric="cosine", k=10, config=config)
  ids, scores = index.search(queries, 10)
  recall = search.recall_at_k(ids, exact_ids)
  assert recall >= 0.95, f"{config.mode}: recall@10 {recall}"
  # Scores are similarities in the same order as exact search's.
  assert np.all(np.diff(scores, axis=1) <= 1e-6)
  np.testing.assert_allclose(scores[:, 0], exact_scores[:, 0], atol=1e-3)

  index.serialize(str(tmp_path / "index"))
  loaded = search.ScannSearcher.load(str(tmp_path / "index"), "cosine", 64, 8_000, index.settings)
  loaded_ids, _ = loaded.search(queries, 10)
  np.testing.assert_array_equal(loaded_ids, ids)


def test_scann_load_errors(tmp_path, clustered):
  with pytest.raises(FileNotFoundError, match="scann_assets.pbtxt is missing"):
    search.ScannSearcher.load(str(tmp_path), "cosine", 4, 10, {})
  db, _ = clustered(300, 8, 5, 0.3, seed=2)
  index = search.ScannSearcher.build(db, k=5)
  index.serialize(str(tmp_path / "i"))
  with pytest.raises(ValueError, match="holds 300 rows; the library has 301"):
    search.ScannSearcher.load(str(tmp_path / "i"), "cosine", 8, 301, index.settings)


def test_an_index_that_cannot_be_written_is_an_os_error_naming_the_folder(tmp_path, clustered):
  """ScaNN reports a full disk as "Failed to extract SingleMachineFactoryOptions: I/O error" (seen on a
  256 KiB tmpfs); the project turns it into an OSError that the commands print as one line."""
  db, _ = clustered(300, 8, 5, 0.3, seed=2)
  index = search.ScannSearcher.build(db, k=5)

  class Failing:
    def serialize(self, directory, relative_path):
      raise RuntimeError("Failed to extract SingleMachineFactoryOptions: I/O error")

  index._searcher = Failing()
  with pytest.raises(OSError, match=r"ScaNN could not write its index \(Failed to extract "
                                    r"SingleMachineFactoryOptions: I/O error\); \d+ bytes are free") as raised:
    index.serialize(str(tmp_path / "index"))
  assert raised.value.filename == str(tmp_path / "index")
