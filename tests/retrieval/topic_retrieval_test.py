"""End to end: `rospr build-library` then `rospr retrieve` on sources that differ in topic.

Six sources, each with its own topic words (plus shared function words), a SentencePiece vocabulary
trained on them, and a T5 encoder of the tiny size with random weights as the retriever. Queries from
each source's held-out instances must retrieve that source's prompt.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from rospr_jax import cli
from rospr_jax.commands import common
from rospr_jax.library import build, store
from rospr_jax.retrieval import retrieve, selection

TOPICS = {
    "sports:score": "goal match team coach striker referee stadium league trophy penalty",
    "cooking:recipe": "flour butter oven sugar whisk dough simmer garlic pepper skillet",
    "space:facts": "planet orbit comet galaxy rocket nebula asteroid telescope lunar crater",
    "law:verdict": "court judge verdict lawyer appeal statute witness jury contract plaintiff",
    "music:review": "guitar melody chord rhythm tempo violin chorus drummer album lyric",
    "finance:news": "stock bond market dividend inflation equity broker yield credit budget",
}
SHARED = "the a of and is to in".split()
pytestmark = pytest.mark.slow  # the module's library takes ~10 s to build on a loaded 2-core machine

RETRIEVER = ["--random-retriever", "tiny", "--retriever-seed", "3"]


def _texts(words, count, rng):
  topic = words.split()
  return [" ".join(rng.permutation(list(rng.choice(topic, 8)) + list(rng.choice(SHARED, 4))))
          for _ in range(count)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  import sentencepiece
  root = tmp_path_factory.mktemp("topics")
  rng = np.random.default_rng(0)
  train = {name: _texts(words, 60, rng) for name, words in TOPICS.items()}
  held_out = {name: _texts(words, 16, rng) for name, words in TOPICS.items()}
  corpus = root / "corpus.txt"
  corpus.write_text("\n".join(t for texts in train.values() for t in texts))
  sentencepiece.SentencePieceTrainer.Train(
      input=str(corpus), model_prefix=str(root / "spiece"), vocab_size=120, model_type="unigram",
      pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2, hard_vocab_limit=False)
  flags = []
  for s, (name, texts) in enumerate(train.items()):
    path = root / f"source{s}.jsonl"
    # Alternate the two accepted line forms: JSON strings and {"text": ...} objects.
    path.write_text("\n".join(json.dumps(t if i % 2 else {"text": t}) for i, t in enumerate(texts)))
    flags += ["--source", f"{name}={path}"]
  for s, (name, texts) in enumerate(held_out.items()):
    (root / f"target{s}.jsonl").write_text(
        "\n".join(json.dumps({"text": t, "choices": ["yes", "no"]}) for t in texts))
  prompts = rng.normal(size=(len(TOPICS), 4, 64)).astype(np.float32)
  np.save(root / "prompts.npy", prompts)
  vocab = ["--vocab", str(root / "spiece.model")]
  assert cli.main(["build-library", "--out", str(root / "lib"), "--prompts",
                   str(root / "prompts.npy"), "--n", "40", "--seed", "1", *flags, *vocab,
                   *RETRIEVER]) == 0
  return root, vocab, prompts, held_out


def test_library_contents(world):
  root, _, prompts, _ = world
  lib = store.Library.open(str(root / "lib"))
  assert lib.num_rows == 6 * 40
  assert lib.source_names == list(TOPICS)
  assert lib.manifest["index"]["settings"]["mode"] == "brute_force"
  assert lib.manifest["extra"]["n"] == 40
  np.testing.assert_array_equal(lib.prompts(), prompts)
  texts = list(lib.texts())
  # Every stored text is one of its own source's instances.
  for s, text in texts:
    assert set(text.split()) - set(SHARED) <= set(TOPICS[lib.source_names[s]].split())


def test_held_out_queries_retrieve_their_source(world):
  root, vocab, _, held_out = world
  args = argparse.Namespace(vocab=vocab[1], retriever=None, random_retriever="tiny",
                                  retriever_seed=3, dtype="float32", max_length=512,
                                  tokens_per_batch=65_536)
  embedder, tokenizer = common.embedder_from_args(args)
  tokenize = tokenizer.encode_input
  lib = store.Library.open(str(root / "lib"), retriever=embedder.fingerprint, dim=embedder.dim)
  correct_sources, top1_hits, top1_total = 0, 0, 0
  for s, (name, texts) in enumerate(held_out.items()):
    queries = embedder.embed_texts(texts, tokenize)
    neighbor_sources, _ = lib.neighbors(queries, 10)
    top1_hits += int((neighbor_sources[:, 0] == s).sum())
    top1_total += len(texts)
    chosen, prompt = retrieve.retrieve_prompt(lib, queries, "rospr", selection.SelectionConfig(num_neighbors=10))
    correct_sources += chosen.chosen == (s,)
    np.testing.assert_array_equal(prompt, lib.prompts()[chosen.chosen[0]])
  print(f"topic retrieval: RoSPr top choice correct for {correct_sources}/{len(held_out)} sources; "
        f"nearest neighbour from the query's source for {top1_hits}/{top1_total} queries")
  assert correct_sources == len(held_out)
  assert top1_hits / top1_total >= 0.9


def test_retrieve_command_writes_selection(world, capsys):
  root, vocab, prompts, _ = world
  out = root / "selection_inter"
  assert cli.main(["retrieve", "--library", str(root / "lib"), "--queries",
                   str(root / "target2.jsonl"), "--out", str(out), "--rule", "inter",
                   "--num-queries", "8", "--target", "space:facts", *vocab, *RETRIEVER]) == 0
  summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  chosen, prompt = retrieve.load_selection(str(out))
  assert chosen.rule == "inter" and chosen.chosen[0] == 2 and summary["names"][0] == "space:facts"
  assert chosen.params["target"] == "space:facts" and len(chosen.params["query_indices"]) == 8
  assert chosen.num_queries == 8 and chosen.num_neighbors == 10
  np.testing.assert_allclose(prompt, selection.interpolate(prompts, chosen.chosen, chosen.weights))
  tampered = prompt.copy()
  tampered[0, 0] += 1
  np.save(out / retrieve.PROMPT_FILE, tampered)  # a prompt the selection's manifest does not list
  with pytest.raises(ValueError, match=r"Selection file prompt.npy in .*selection_inter is corrupted: sha256"):
    retrieve.load_selection(str(out))


def test_retrieve_random_draws_from_the_whole_library_seeded_by_flag_and_target(world, capsys):
  root, vocab, _, _ = world
  lib = store.Library.open(str(root / "lib"))
  drawn = {}
  for seed in range(6):
    out = root / f"selection_random_{seed}"
    assert cli.main(["retrieve", "--library", str(root / "lib"), "--queries", str(root / "target2.jsonl"),
                     "--out", str(out), "--rule", "random", "--random-seed", str(seed), "--num-queries", "4",
                     "--target", "space:facts", *vocab, *RETRIEVER]) == 0
    chosen, _ = retrieve.load_selection(str(out))
    assert chosen.params["random_seed"] == seed and chosen.params["num_sources"] == len(lib.source_names)
    assert chosen.chosen == (selection.random_source(len(lib.source_names), seed, "space:facts"),)
    drawn[seed] = chosen.chosen[0]
  capsys.readouterr()
  assert len(set(drawn.values())) > 1  # the flag reaches the draw


def test_retrieve_refuses_another_retriever(world, capsys):
  root, vocab, _, _ = world
  code = cli.main(["retrieve", "--library", str(root / "lib"), "--queries",
                   str(root / "target0.jsonl"), "--out", str(root / "x"), *vocab,
                   "--random-retriever", "tiny", "--retriever-seed", "4"])
  assert code == 2
  assert "was built with retriever" in capsys.readouterr().err


def test_var_needs_a_backbone(world, capsys):
  root, vocab, _, _ = world
  code = cli.main(["retrieve", "--library", str(root / "lib"), "--queries",
                   str(root / "target0.jsonl"), "--out", str(root / "x"), "--rule", "var", *vocab,
                   *RETRIEVER])
  assert code == 2
  assert "--rule var rank-classifies the queries: give --backbone" in capsys.readouterr().err


def test_retrieve_inter_var_with_a_backbone(world, tmp_path, capsys):
  import jax
  import jax.numpy as jnp
  from flax import linen as nn
  from rospr_jax.model import T5, get_config
  from rospr_jax.model.checkpoints import save_t5x
  root, vocab, prompts, _ = world
  config = get_config("tiny")  # H = 64, the prompts' H
  tokens = jnp.ones((1, 4), jnp.int32)
  params = nn.unbox(jax.jit(lambda rng: T5(config).init(rng, tokens, tokens))(
      jax.random.PRNGKey(5))["params"])
  save_t5x(tmp_path / "backbone", config, jax.tree_util.tree_map(np.asarray, params))
  out = tmp_path / "selection_var"
  assert cli.main(["retrieve", "--library", str(root / "lib"), "--queries",
                   str(root / "target4.jsonl"), "--out", str(out), "--rule", "inter_var",
                   "--top-k", "3", "--num-prompts", "2", "--num-queries", "6", "--eps", "0.01",
                   "--backbone", str(tmp_path / "backbone"), *vocab, *RETRIEVER]) == 0
  chosen, prompt = retrieve.load_selection(str(out))
  assert chosen.rule == "inter_var" and len(chosen.candidates) <= 3 and len(chosen.chosen) == 2
  # The record is consistent with VAR's definition: 6 queries with 2 choices each, so every variance
  # is one of ((k / 6 - 1 / 2) ** 2 for k = 0..6), and score = freq / (var + eps).
  allowed = [(k / 6 - 0.5) ** 2 for k in range(7)]
  for freq, var, score in zip(chosen.freqs, chosen.variances, chosen.scores):
    assert min(abs(var - a) for a in allowed) < 1e-12
    assert score == pytest.approx(freq / (var + 0.01))
  assert list(chosen.scores) == sorted(chosen.scores, reverse=True)
  top = np.array(chosen.scores[:2])
  np.testing.assert_allclose(chosen.weights, top / top.sum())
  np.testing.assert_allclose(prompt, selection.interpolate(prompts, chosen.chosen, chosen.weights),
                             rtol=1e-6)
