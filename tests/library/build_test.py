"""Building a library: the instance draw, source files, and the build command's input checks."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from rospr_jax import storage
from rospr_jax.commands import build_library
from rospr_jax.library import build, embed, sources, store


@pytest.fixture(scope="module")
def embedder():
  return embed.load_embedder(random_size="tiny", seed=0, tokens_per_batch=256)


def _tokenize(text):
  return [3 + (ord(ch) % 500) for ch in text]


def test_sample_texts_is_seeded_per_source():
  a = sources.SourceTexts("a", [f"a{i}" for i in range(50)])
  b = sources.SourceTexts("b", [f"b{i}" for i in range(50)])
  first = sources.sample_texts(a, 10, seed=0)
  assert first == sources.sample_texts(a, 10, seed=0)
  assert first != sources.sample_texts(a, 10, seed=1)
  assert first != [t.replace("b", "a") for t in sources.sample_texts(b, 10, seed=0)]
  assert len(set(first)) == 10 and set(first) <= set(a.texts)
  assert sources.sample_texts(sources.SourceTexts("c", ["x", "y"]), 10, seed=0) == ["x", "y"]
  with pytest.raises(ValueError, match="n \\(instances per source\\) must be >= 1"):
    sources.sample_texts(a, 0, seed=0)


def test_build_library_chunks_across_sources(tmp_path, embedder):
  srcs = [sources.SourceTexts("a", [f"alpha {i}" for i in range(7)]),
          sources.SourceTexts("b", [f"beta beta {i}" for i in range(3)] + ["", "  "]),
          sources.SourceTexts("c", [f"gamma {i} gamma" for i in range(9)])]
  prompts = np.zeros((3, 2, 64), np.float32)
  lib, report = build.build_library(str(tmp_path / "lib"), srcs, prompts, embedder, _tokenize,
                                    draw=build.DrawConfig(n=5, seed=3), index=build.IndexConfig("exact"),
                                    output=build.OutputConfig(shard_rows=4, chunk_texts=4))
  assert report["rows"] == 13 and report["sources_short_of_n"] == {"b": 3}
  assert report["blank_texts_skipped"] == {"b": 2}
  assert [s["n"] for s in lib.manifest["sources"]] == [5, 3, 5]
  texts = list(lib.texts())
  expected = [(0, t) for t in sources.sample_texts(srcs[0], 5, 3)]
  expected += [(1, t) for t in srcs[1].texts[:3]]
  expected += [(2, t) for t in sources.sample_texts(srcs[2], 5, 3)]
  assert texts == expected
  # Every stored row is the embedding of its text, whichever chunk it was computed in.
  direct = embedder.embed([_tokenize(t) for _, t in texts])
  np.testing.assert_allclose(np.concatenate(lib.embedding_shards()), direct, rtol=1e-5, atol=1e-6)
  assert lib.retriever_fingerprint == embedder.fingerprint


def test_random_retriever_covers_the_vocabulary(embedder):
  assert embedder.config.vocab_size == 512  # the tiny size's own
  grown = embed.load_embedder(random_size="tiny", min_vocab_size=3000)
  assert grown.config.vocab_size == 3000 and grown.dim == 64
  assert grown.embed([[2999, 5]]).shape == (1, 64)


def test_source_without_text_is_refused(tmp_path, embedder):
  with pytest.raises(ValueError, match="Source 'e' has no non-blank text"):
    build.build_library(str(tmp_path / "lib"), [sources.SourceTexts("e", [" "])],
                        np.zeros((1, 1, 64), np.float32), embedder, _tokenize,
                        index=build.IndexConfig("exact"))
  assert not (tmp_path / "lib").exists()


def test_source_files(tmp_path):
  path = tmp_path / "s.jsonl"
  path.write_text('"one"\n\n{"text": "two", "source": "s"}\n')
  assert sources.read_source_file(str(path), "s") == ["one", "two"]
  with pytest.raises(ValueError, match="line 3 belongs to source 's', but the file was given for "
                     "source 't'"):
    sources.read_source_file(str(path), "t")
  path.write_text('{"text": "ok"}\n{"txt": "bad"}\n')
  with pytest.raises(ValueError, match="s.jsonl: line 2 has no string \"text\""):
    sources.read_source_file(str(path), "s")
  path.write_text('{"text": "ok"}\n{"text": "broken\n')
  with pytest.raises(ValueError, match="s.jsonl: line 2 is not valid JSON"):
    sources.read_source_file(str(path), "s")
  with pytest.raises(FileNotFoundError, match="Input file not found: .*nope.jsonl"):
    sources.read_source_file(str(tmp_path / "nope.jsonl"), "s")
  path.write_text('{"source": "x", "text": "1"}\n{"source": "y", "text": "2"}\n'
                  '{"source": "x", "text": "3"}\n')
  assert sources.read_instances(str(path)) == {"x": ["1", "3"], "y": ["2"]}
  path.write_text('{"text": "q", "choices": ["yes", "no"]}\n"plain"\n')
  assert sources.read_queries(str(path)) == [sources.Query("q", ("yes", "no")),
                                             sources.Query("plain")]
  path.write_text('{"text": "q", "choices": []}\n')
  with pytest.raises(ValueError, match="line 1 has \"choices\" that are not a non-empty list"):
    sources.read_queries(str(path))
  path.write_text('{"text": "q", "target": "rte"}\n"plain"\n{"text": "r", "target": "cb"}\n')
  with pytest.raises(ValueError, match="s.jsonl: line 3 is a query of the target 'cb', line 1 of 'rte'; a queries "
                                       "file holds the queries of one target."):
    sources.read_queries(str(path))
  path.write_text('{"text": "q", "target": 5}\n')
  with pytest.raises(ValueError, match="s.jsonl: line 1 has a \"target\" that is not a string"):
    sources.read_queries(str(path))
  path.write_text('{"text": "q", "target": "rte"}\n"plain"\n')
  assert sources.read_queries(str(path), "rte") == [sources.Query("q", None, "rte"), sources.Query("plain", None, "rte")]


def _args(tmp_path, **overrides):
  values = dict(source=None, instances=None, tasks=None, source_names=None,
                prompts=str(tmp_path / "p.npy"), split="train", n=100, seed=0)
  values.update(overrides)
  return argparse.Namespace(**values)


def test_read_sources_orders_and_checks(tmp_path):
  np.save(tmp_path / "p.npy", np.arange(2 * 1 * 2, dtype=np.float32).reshape(2, 1, 2))
  (tmp_path / "x.jsonl").write_text('"x text"\n')
  (tmp_path / "y.jsonl").write_text('"y text"\n')
  srcs, table, _ = build_library._read_sources(_args(tmp_path, source=[f"y={tmp_path}/y.jsonl",
                                                            f"x={tmp_path}/x.jsonl"]))
  assert [s.name for s in srcs] == ["y", "x"] and table.shape == (2, 1, 2)
  (tmp_path / "dt=2024").mkdir()  # a path holding "=": NAME is what comes before the first one
  (tmp_path / "dt=2024" / "x.jsonl").write_text('"dated x text"\n')
  srcs, _, _ = build_library._read_sources(_args(tmp_path, source=[f"y={tmp_path}/y.jsonl",
                                                                   f"x={tmp_path}/dt=2024/x.jsonl"]))
  assert [(s.name, s.texts) for s in srcs] == [("y", ["y text"]), ("x", ["dated x text"])]
  (tmp_path / "all.jsonl").write_text('{"source": "x", "text": "1"}\n{"source": "y", "text": "2"}\n')
  with pytest.raises(ValueError, match="--source-names must give the sources in the order"):
    build_library._read_sources(_args(tmp_path, instances=str(tmp_path / "all.jsonl")))
  (tmp_path / "names.txt").write_text("x\nz\n")
  with pytest.raises(ValueError, match=r"without instances \['z'\] \(1\); without a prompt \['y'\]"):
    build_library._read_sources(_args(tmp_path, instances=str(tmp_path / "all.jsonl"),
                              source_names=str(tmp_path / "names.txt")))
  with pytest.raises(ValueError, match=r"p.npy has shape \[2, 1, 2\]; expected \[S, P, H\] with S = 1"):
    build_library._read_sources(_args(tmp_path, source=[f"x={tmp_path}/x.jsonl"]))
  with pytest.raises(ValueError, match="--source 'x': expected NAME=FILE"):
    build_library._read_sources(_args(tmp_path, source=["x"]))
  with pytest.raises(ValueError, match="as --source NAME=FILE flags, as one --instances file, or as"):
    build_library._read_sources(_args(tmp_path))


def test_read_sources_from_a_prompt_export(tmp_path):
  from rospr_jax.prompt import export
  table = np.arange(2 * 1 * 3, dtype=np.float32).reshape(2, 1, 3)
  export.export_prompts(str(tmp_path / "export"), table, ["x", "y"], step=5,
                        backbone_fingerprint="b" * 16, seeds=[0, 1], source_steps=[5, 5])
  (tmp_path / "all.jsonl").write_text('{"source": "y", "text": "2"}\n{"source": "x", "text": "1"}\n')
  srcs, got, _ = build_library._read_sources(_args(tmp_path, instances=str(tmp_path / "all.jsonl"),
                                        prompts=str(tmp_path / "export")))
  assert [s.name for s in srcs] == ["x", "y"]  # the export's row order
  np.testing.assert_array_equal(got, table)
  manifest = json.loads((tmp_path / "export" / "checkpoint_5" / "manifest.json").read_text())
  assert srcs[1].prompt_file_sha256 == manifest["sources"][1]["sha256"]
  assert storage.sha256_file(srcs[1].prompt_file) == manifest["sources"][1]["sha256"]


def test_build_command_reports_errors(tmp_path, capsys):
  from rospr_jax import cli
  code = cli.main(["build-library", "--out", str(tmp_path / "lib"), "--prompts",
                   str(tmp_path / "missing.npy"), "--source", f"x={tmp_path}/x.jsonl",
                   "--vocab", "v.model", "--random-retriever", "tiny"])
  assert code == 2
  assert "Input file not found" in capsys.readouterr().err


def _copa_effect_task(tmp_path, count: int):
  """COPA's "What could happen next, C1 or C2?" template over `count` records in tmp_path: the
  template renders nothing for the records that ask for a cause (every even one), so half drop."""
  from rospr_jax.data import archives, catalog, prompted, templates
  spec = catalog.HELD_OUT_DATASETS[5]
  template = templates.load_dataset_templates(archives.promptsource_templates_dir(), "super_glue",
                                              "copa")["…What could happen next, C1 or C2?"]
  folder = tmp_path / "super_glue" / "copa"
  folder.mkdir(parents=True)
  rows = [{"premise": f"Premise number {i}.", "choice1": f"First {i}.", "choice2": f"Second {i}.",
           "question": "effect" if i % 2 else "cause", "label": i % 2, "idx": i} for i in range(count)]
  (folder / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  return prompted.PromptsourceTask(spec, template, data_root=tmp_path), template


def test_draw_task_texts_renders_only_the_seeded_draw(tmp_path):
  task, template = _copa_effect_task(tmp_path, 40)
  rendered = {ex.idx: ex.inputs for ex in task.examples("validation")}
  assert sorted(rendered) == list(range(1, 40, 2))  # the 20 "effect" records
  rendered_before = task.report.rendered[template.where] + task.report.dropped[template.where]
  drawn = sources.draw_task_texts(task, "validation", 10, seed=0)
  # Independently: the first 10 positions of the seeded permutation whose example renders.
  order = np.random.default_rng(sources.source_seed(0, task.name)).permutation(40)
  assert drawn == [rendered[int(i)] for i in order if int(i) in rendered][:10]
  work = task.report.rendered[template.where] + task.report.dropped[template.where] - rendered_before
  assert work < 40  # only drawn positions were rendered, not the whole split
  assert drawn == sources.draw_task_texts(task, "validation", 10, seed=0)
  assert drawn != sources.draw_task_texts(task, "validation", 10, seed=1)
  everything = sources.draw_task_texts(task, "validation", 100, seed=0)  # more than there are
  assert everything == [rendered[int(i)] for i in order if int(i) in rendered]
  with pytest.raises(ValueError, match="must be >= 1"):
    sources.draw_task_texts(task, "validation", 0, seed=0)


def test_build_command_draws_from_prompted_tasks(tmp_path, monkeypatch):
  from rospr_jax import cli
  from rospr_jax.data import catalog, vocabulary
  task, _ = _copa_effect_task(tmp_path / "data", 30)
  monkeypatch.setenv("ROSPR_DATA_DIR", str(tmp_path / "data"))
  np.save(tmp_path / "p.npy", np.ones((1, 2, 64), np.float32))
  args = ["build-library", "--out", str(tmp_path / "lib"), "--prompts", str(tmp_path / "p.npy"),
          "--split", "validation", "--n", "6", "--seed", "2", "--index", "exact",
          "--vocab", vocabulary.offline_vocabulary_path(), "--random-retriever", "tiny"]
  # A _score_eval name stands for its task.
  assert cli.main(args + ["--tasks", task.name + catalog.SCORE_EVAL_SUFFIX]) == 0
  lib = store.Library.open(str(tmp_path / "lib"))
  assert lib.source_names == [task.name]
  assert [t for _, t in lib.texts()] == sources.draw_task_texts(task, "validation", 6, seed=2)
  with pytest.raises(ValueError, match="no rospr task or mixture named 'no_such_task'"):
    build_library._read_sources(argparse.Namespace(
        source=None, instances=None, tasks=["no_such_task"], source_names=None,
        prompts=str(tmp_path / "p.npy"), split="validation", n=6, seed=2))


def test_draw_task_texts_from_a_bigbench_task(bigbench_env):
  from rospr_jax.data import bigbench, prompted
  task = prompted.BigBenchTask(bigbench.BigBenchStore(), "novel_concepts")
  train = [ex.inputs for ex in task.examples("train")]
  order = np.random.default_rng(sources.source_seed(1, task.name)).permutation(task.count("train"))
  assert sources.draw_task_texts(task, "train", 5, seed=1) == [train[i] for i in order[:5]]


def test_a_huge_line_is_read_within_a_bound_set_by_the_input_length(tmp_path):
  """Was: `build-library --source` with one 1 GB line passed 10 GB of memory (a 200 MB line: 4.4 GiB more
  at its peak, in 51 s). A text is read to its first max_length x 32 characters, its line to that many
  characters' bytes, the rest skipped a MiB at a time: in a child process, reading a 200 MB line adds
  little to the peak memory."""
  import os, subprocess, sys, textwrap  # pylint: disable=g-import-not-at-top,multiple-imports
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "model"))
  from checkpoint_fixtures import RSS_FUNCTION  # pylint: disable=g-import-not-at-top
  line_bytes = 200 * 2**20
  with open(tmp_path / "a.jsonl", "w") as f:
    f.write(json.dumps("short text") + "\n" + '{"source": "a", "text": "' + "word " * (line_bytes // 5) + '"}\n')
  script = textwrap.dedent(f"""
      from rospr_jax.library import sources
      bound = sources.TextBound.for_tokens(16)
      before = rss("VmHWM:")
      texts = sources.read_source_file({str(tmp_path / "a.jsonl")!r}, "a", bound)
      print(rss("VmHWM:") - before, bound.cut, [len(t) for t in texts])
      """)
  done = subprocess.run([sys.executable, "-c", RSS_FUNCTION + script], capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  growth, cut, lengths = done.stdout.split(maxsplit=2)
  assert int(growth) < 32 * 2**20, f"peak memory grew {int(growth) / 2**20:.0f} MiB reading a 200 MiB line"
  assert int(cut) == 1 and json.loads(lengths) == [10, 16 * sources.CHARS_PER_TOKEN]


def test_build_library_reports_the_texts_it_cut_at_read(tmp_path, tiny_model, capsys):
  """The command's report counts the texts cut at read (texts_cut_at_read); the library keeps them cut."""
  from rospr_jax import cli  # pylint: disable=g-import-not-at-top
  (tmp_path / "a.jsonl").write_text(json.dumps("short text") + "\n" + json.dumps({"text": "word " * 4000}) + "\n")
  (tmp_path / "b.jsonl").write_text(json.dumps("another text") + "\n")
  np.save(tmp_path / "prompts.npy", np.zeros((2, 3, tiny_model.config.emb_dim), np.float32))
  capsys.readouterr()
  assert cli.main(["build-library", "--out", str(tmp_path / "lib"), "--prompts", str(tmp_path / "prompts.npy"),
                   "--source", f"a={tmp_path / 'a.jsonl'}", "--source", f"b={tmp_path / 'b.jsonl'}", "--retriever",
                   tiny_model.checkpoint, "--vocab", tiny_model.vocab, "--max-length", "16", "--index", "exact"]) == 0
  report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert report["texts_cut_at_read"] == 1 and report["rows"] == 3 and report["truncated_inputs"] == 1
  texts = [json.loads(line)["text"] for line in (tmp_path / "lib" / "shards" / "texts-00000.jsonl").open()]
  assert sorted(len(t) for t in texts)[-1] == 16 * sources.CHARS_PER_TOKEN


def test_lines_longer_than_the_bound_keep_their_first_characters_or_are_refused_by_line(tmp_path):
  """A line cut at the bound: a JSON string or an object whose long member is its text is read to the
  bound (an escape or a character cut in two left out); the members it needs after the cut, or a long
  member that is not text, are refused naming the line and what to write first."""
  bound = sources.TextBound(10)  # lines read to 10 * 6 + 4096 bytes
  long = "é" * 3000  # 6000 bytes as \u00e9 escapes, 6000 as UTF-8 too
  path = tmp_path / "a.jsonl"
  path.write_text("\n".join([json.dumps(long), json.dumps({"source": "a", "text": long}, ensure_ascii=False),
                             json.dumps({"source": "a", "text": "ok", "pad": " " * 5000}), json.dumps("short")]) + "\n")
  assert sources.read_source_file(str(path), "a", bound) == ["é" * 10, "é" * 10, "ok", "short"]
  assert bound.cut == 3  # the third's text is whole, but its line was cut: counted
  path.write_text(json.dumps({"text": long, "source": "a"}) + "\n")
  with pytest.raises(ValueError, match=r"a.jsonl: line 1 needs a string \"source\" and a \"text\" \(the line is longer "
                                       r"than the bytes read of it: write \"source\" before \"text\"\)\."):
    sources.read_instances(str(path), bound)
  path.write_text(json.dumps({"source": "a", "meta": list(range(3000)), "text": "x"}) + "\n")
  with pytest.raises(ValueError, match="a.jsonl: line 1 is longer than the 4156 bytes read of a line, and those do "
                                       "not hold a JSON string or an object whose long member is its text."):
    sources.read_instances(str(path), bound)
