"""Hand-computed checks of the selection rules (docs/design.md, "Retrieval rules")."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from rospr_jax.retrieval import selection

# Two queries, three neighbours each. Sources 1 and 3 both appear twice; 1 has the larger summed
# similarity (0.8 + 0.7 = 1.5 > 0.9 + 0.5 = 1.4), although 3 is the single nearest neighbour.
NEIGHBORS = np.array([[3, 1, 2], [1, 3, 5]])
SIMS = np.array([[0.9, 0.8, 0.7], [0.7, 0.5, 0.4]])


def test_frequencies_order_count_then_similarity_then_id():
  freqs = selection.frequencies(NEIGHBORS, SIMS)
  assert freqs.source_ids.tolist() == [1, 3, 2, 5]
  assert freqs.counts.tolist() == [2, 2, 1, 1]
  np.testing.assert_allclose(freqs.similarity, [1.5, 1.4, 0.7, 0.4])
  assert (freqs.num_queries, freqs.num_neighbors) == (2, 3)


def test_full_tie_breaks_by_smaller_source_id():
  freqs = selection.frequencies(np.array([[7, 4], [4, 7]]), np.array([[0.5, 0.5], [0.5, 0.5]]))
  assert freqs.source_ids.tolist() == [4, 7]
  assert selection.rospr(freqs).chosen == (4,)


def test_rospr_picks_most_frequent_with_similarity_tie_break():
  sel = selection.select("rospr", NEIGHBORS, SIMS)
  assert sel.chosen == (1,)
  assert sel.weights == (1.0,)
  assert sel.candidates == (1, 3, 2, 5)
  assert sel.scores == (2.0, 2.0, 1.0, 1.0)
  assert sel.variances is None


def test_inter_weights_are_normalized_frequencies():
  sel = selection.select("inter", NEIGHBORS, SIMS, num_prompts=3)
  assert sel.chosen == (1, 3, 2)
  np.testing.assert_allclose(sel.weights, [2 / 5, 2 / 5, 1 / 5])
  # Asking for more prompts than there are candidates takes all of them.
  sel = selection.select("inter", NEIGHBORS, SIMS, num_prompts=10)
  assert sel.chosen == (1, 3, 2, 5)
  np.testing.assert_allclose(sel.weights, [2 / 6, 2 / 6, 1 / 6, 1 / 6])


def test_var_scores_hand_computed_two_choices():
  # Q = 4 queries with 2 choices each.
  predictions = np.array([
      [0, 0, 0, 0],  # collapses onto choice 0: p = (1, 0), var = (0.25 + 0.25) / 2 = 0.25
      [0, 1, 0, 1],  # balanced: p = (0.5, 0.5), var = 0 -> eps decides
      [0, 0, 0, 1],  # p = (0.75, 0.25), var = (0.0625 + 0.0625) / 2 = 0.0625
  ])
  counts = np.array([5, 2, 3])
  variances, scores = selection.var_scores(counts, predictions, [2, 2, 2, 2], eps=1e-3)
  np.testing.assert_allclose(variances, [0.25, 0.0, 0.0625], atol=1e-15)
  np.testing.assert_allclose(scores, [5 / 0.251, 2 / 0.001, 3 / 0.0635])
  # With equal choice counts the variance is the population variance of p.
  for row, v in zip(predictions, variances):
    p = np.bincount(row, minlength=2) / 4
    assert v == pytest.approx(np.var(p))


def test_var_scores_different_choice_counts():
  # C_q = 2, 3, 4: u = [13, 13, 7, 3] / 36 (each query spreads 1 / C_q over its choices).
  num_choices = [2, 3, 4]
  predictions = np.array([[0, 0, 0], [1, 2, 3], [1, 0, 2]])
  variances, _ = selection.var_scores([1, 1, 1], predictions, num_choices)

  def reference(row):
    u = [Fraction(0)] * 4
    for c_q in num_choices:
      for c in range(c_q):
        u[c] += Fraction(1, 3 * c_q)
    p = [Fraction(sum(1 for x in row if x == c), 3) for c in range(4)]
    return float(sum((pc - uc) ** 2 for pc, uc in zip(p, u)) / 4)

  assert reference([0, 0, 0]) == pytest.approx(7 / 48)  # worked by hand: 756 / 5184
  assert reference([1, 2, 3]) == pytest.approx(23 / 432)  # 276 / 5184
  np.testing.assert_allclose(variances, [reference(r) for r in predictions.tolist()], rtol=1e-12)


def test_var_collapsed_candidate_is_pushed_down():
  # Source 1 is the most frequent, but answers every query with choice 0.
  neighbors = np.array([[1, 1, 2], [1, 2, 3], [1, 3, 3], [1, 2, 3]])
  sims = np.ones_like(neighbors, dtype=float)
  # freq: 1 -> 5, 2 -> 3, 3 -> 4 : candidate order [1, 3, 2].
  preds = {1: [0, 0, 0, 0], 3: [0, 0, 1, 1], 2: [0, 1, 1, 1]}
  calls = []

  def predict_choices(ids):
    calls.append(list(ids))
    return [preds[i] for i in ids]

  sel = selection.select("var", neighbors, sims, top_k=3, eps=1e-6,
                         predict_choices=predict_choices, num_choices=[2] * 4)
  assert calls == [[1, 3, 2]]  # one batched call with the K candidates in frequency order
  # var: 1 -> 0.25, 3 -> 0, 2 -> 0.0625. scores: 5 / 0.250001, 4 / 1e-6, 3 / 0.062501
  assert sel.candidates == (3, 2, 1)
  assert sel.chosen == (3,)
  np.testing.assert_allclose(sel.variances, [0.0, 0.0625, 0.25], atol=1e-15)
  np.testing.assert_allclose(sel.scores, [4 / 1e-6, 3 / 0.062501, 5 / 0.250001])
  assert sel.freqs == (4, 3, 5)

  sel = selection.select("inter_var", neighbors, sims, top_k=3, num_prompts=2, eps=1e-6,
                         predict_choices=predict_choices, num_choices=[2] * 4)
  assert sel.chosen == (3, 2)
  total = 4 / 1e-6 + 3 / 0.062501
  np.testing.assert_allclose(sel.weights, [4 / 1e-6 / total, 3 / 0.062501 / total])
  assert sel.params == {"top_k": 3, "eps": 1e-6, "num_prompts": 2}


def test_var_only_scores_top_k_and_equal_scores_keep_frequency_order():
  neighbors = np.array([[1, 1, 2, 3], [1, 2, 3, 4]])
  sims = np.ones_like(neighbors, dtype=float)
  # freq: 1 -> 3, 2 -> 2, 3 -> 2, 4 -> 1. K = 2 -> only [1, 2] are scored.
  sel = selection.select("var", neighbors, sims, top_k=2, eps=0.5,
                         predict_choices=lambda ids: [[0, 1]] * len(ids), num_choices=[2, 2])
  # Both variances are 0: scores 3 / 0.5 = 6 and 2 / 0.5 = 4.
  assert sel.candidates == (1, 2)
  np.testing.assert_allclose(sel.scores, [6.0, 4.0])
  # Equal variance and equal frequency: the frequency order (similarity, then id) is kept.
  freqs = selection.frequencies(np.array([[5, 6]]), np.array([[0.1, 0.9]]))
  sel = selection.var(freqs, [[0], [0]], [3], top_k=2)
  assert sel.candidates == (6, 5)


def test_var_errors_name_the_problem():
  freqs = selection.frequencies(NEIGHBORS, SIMS)
  with pytest.raises(ValueError, match="candidate 1 predicts choice position 2 for query 0, "
                     "which has 2 choices"):
    selection.var(freqs, [[0, 1], [2, 0]], [2, 2], top_k=2)
  with pytest.raises(ValueError, match=r"K = 2 first candidates \[1, 3\]"):
    selection.var(freqs, [[0, 1]], [2, 2], top_k=2)
  with pytest.raises(ValueError, match="needs predict_choices and num_choices"):
    selection.select("var", NEIGHBORS, SIMS)
  with pytest.raises(ValueError, match="returned 1 prediction lists for 2 candidate prompts"):
    selection.select("var", NEIGHBORS, SIMS, top_k=2, predict_choices=lambda ids: [[0, 0]],
                     num_choices=[2, 2])
  with pytest.raises(ValueError, match=r"lengths \[3\]; expected 2"):
    selection.select("var", NEIGHBORS, SIMS, top_k=2, predict_choices=lambda ids: [[0] * 3] * 2,
                     num_choices=[2, 2])
  with pytest.raises(ValueError, match="query 1 has 0 answer choices"):
    selection.var_scores([1], [[0, 0]], [2, 0])
  with pytest.raises(ValueError, match="Unknown selection rule 'best'"):
    selection.select("best", NEIGHBORS, SIMS)


def test_frequencies_validate_shapes():
  with pytest.raises(ValueError, match=r"similarities shape \(2, 2\) differs"):
    selection.frequencies(NEIGHBORS, SIMS[:, :2])
  with pytest.raises(ValueError, match="integer source ids"):
    selection.frequencies(SIMS, SIMS)


def test_selection_json_round_trip():
  preds = lambda ids: [[0, 1]] * len(ids)  # noqa: E731
  for rule in selection.RULES:
    sel = selection.select(rule, NEIGHBORS, SIMS, predict_choices=preds, num_choices=[2, 2])
    sel = sel.with_names(["a", "b", "c", "d", "e", "f"])
    again = selection.Selection.from_json(sel.to_json())
    assert again == sel
  assert again.names == ("b", "d", "c", "f")
  data = sel.to_dict()
  del data["weights"]
  with pytest.raises(ValueError, match=r"missing keys \['weights'\]"):
    selection.Selection.from_dict(data)


def test_interpolate_hand_computed():
  prompts = np.arange(3 * 2 * 2, dtype=np.float32).reshape(3, 2, 2)
  mixed = selection.interpolate(prompts, [2, 0], [0.25, 0.75])
  expected = 0.25 * np.array([[8, 9], [10, 11]]) + 0.75 * np.array([[0, 1], [2, 3]])
  np.testing.assert_allclose(mixed, expected)
  assert mixed.dtype == np.float32 and mixed.shape == (2, 2)
  np.testing.assert_array_equal(selection.interpolate(prompts, [1], [1.0]), prompts[1])
  with pytest.raises(ValueError, match="weights must sum to 1"):
    selection.interpolate(prompts, [0, 1], [0.5, 0.6])
  with pytest.raises(ValueError, match=r"prompt id out of range: ids \[3\] for a table of 3"):
    selection.interpolate(prompts, [3], [1.0])


def test_n_prime_and_k_above_the_candidates_are_recorded_and_said(caplog):
  """N' = 50 with 4 candidate sources acts as 4: the selection records `num_prompts_used` (as it
  records the Q queries actually drawn) and a warning says so; within the candidates nothing is added."""
  with caplog.at_level("WARNING", logger=selection.__name__):
    sel = selection.select("inter", NEIGHBORS, SIMS, num_prompts=50)
  assert sel.chosen == (1, 3, 2, 5) and sel.params == {"num_prompts": 50, "num_prompts_used": 4}
  assert "inter: num_prompts = 50 but the queries' neighbours come from 4 sources; 4 are used." in caplog.text
  assert selection.select("inter", NEIGHBORS, SIMS, num_prompts=3).params == {"num_prompts": 3}
  caplog.clear()
  predict = lambda source_ids: np.zeros((len(source_ids), 2), np.int32)  # K clamped to the 4 candidates
  with caplog.at_level("WARNING", logger=selection.__name__):
    sel = selection.select("inter_var", NEIGHBORS, SIMS, num_prompts=9, top_k=6, predict_choices=predict,
                           num_choices=[2, 2])
  assert sel.params["top_k_used"] == 4 and sel.params["num_prompts_used"] == 4
  assert "inter_var: top_k = 6 but" in caplog.text and "inter_var: num_prompts = 9 but" in caplog.text
