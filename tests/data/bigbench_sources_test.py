"""BIG-bench from every form users have (checkout, tasksource and hails parquet, sdist, GitHub), into one
store; tampered files, unreachable GitHub and wrong sources refused in one line."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

import bigbench_checkout as checkout_lib
from rospr_jax import storage
from rospr_jax.data import archives
from rospr_jax.data import bigbench
from rospr_jax.data import bigbench_sources as sources

ROOT = pathlib.Path(__file__).resolve().parents[2]
MC_TASKS = sorted(["anachronisms", "arithmetic", *checkout_lib.TARGETS])


@pytest.fixture(autouse=True)
def _no_source_from_the_environment(monkeypatch):
  monkeypatch.delenv("ROSPR_BIGBENCH", raising=False)
  monkeypatch.delenv("ROSPR_BIGBENCH_GITHUB_URL", raising=False)


@pytest.fixture(scope="module")
def forms(tmp_path_factory, bigbench_checkout) -> dict[str, pathlib.Path]:
  """The test checkout's tasks in every form: {form: the path a user gives}."""
  root = tmp_path_factory.mktemp("forms")
  return {
      "checkout": bigbench_checkout,
      "tasksource": checkout_lib.write_parquet(root / "tasksource", bigbench_checkout, "tasksource"),
      "hails": checkout_lib.write_parquet(root / "hails", bigbench_checkout, "hails"),
      "sdist": checkout_lib.write_tarball(root / "bigbench-1.0.0.tar.gz", bigbench_checkout),
      "github": checkout_lib.write_tarball(root / "github.tar.gz", bigbench_checkout,
                                           top=f"BIG-bench-{sources.GITHUB_COMMIT}"),
  }


def _pin_sdist(monkeypatch, archive: pathlib.Path) -> None:
  """archives.BIGBENCH pinned to the test archive (the real sdist is no longer served)."""
  monkeypatch.setattr(archives, "BIGBENCH", dataclasses.replace(
      archives.BIGBENCH, sha256=storage.sha256_file(archive), size=archive.stat().st_size))


def _build(form: str, forms, cache: pathlib.Path, monkeypatch) -> bigbench.BigBenchStore:
  if form == "sdist":
    _pin_sdist(monkeypatch, forms["sdist"])
  if form == "github":
    monkeypatch.setenv(sources.ENV_GITHUB_URL, forms["github"].as_uri())
    return bigbench.BigBenchStore(sources.build_store("github", cache))
  return bigbench.BigBenchStore(sources.build_store(forms[form], cache))


def _no_subtask(examples):
  return [dataclasses.replace(e, subtask=None) for e in examples]


@pytest.mark.parametrize("form", ["tasksource", "hails", "sdist", "github"])
def test_every_form_gives_the_checkouts_examples_splits_and_inputs(form, forms, bigbench_folder, tmp_path,
                                                                   monkeypatch):
  reference = bigbench.BigBenchStore(bigbench_folder)  # built from the checkout
  store = _build(form, forms, tmp_path, monkeypatch)
  assert store.source["form"] == form and reference.source["form"] == "checkout"
  assert store.task_names() == reference.task_names() == MC_TASKS  # generative and programmatic left out
  hf = form in ("tasksource", "hails")
  for task in MC_TASKS:
    want, got = reference.examples(task), store.examples(task)
    # Parquet rows carry no subtask names: a container read from them is one part (subtask None).
    assert (_no_subtask(got) if hf else got) == (_no_subtask(want) if hf else want), (form, task)
    assert [e.inputs for e in got] == [e.inputs for e in want]
    for split in ("train", "validation"):
      if bigbench.can_split(len(want)):
        assert bigbench.split_examples(_no_subtask(got), split) == bigbench.split_examples(_no_subtask(want), split)
    info = dict(store.info(task), subtasks=reference.info(task)["subtasks"]) if hf else store.info(task)
    assert info == reference.info(task)
  assert len(store.examples("novel_concepts")) == 32 and len(store.examples("arithmetic")) == 20


def test_unformatting_recovers_the_prefixes(forms, tmp_path):
  store = bigbench.BigBenchStore(sources.build_store(forms["hails"], tmp_path))
  task = checkout_lib.tasks_dir(forms["checkout"])
  prefixes = ("task_prefix", "example_input_prefix", "example_output_prefix", "choice_prefix",
              "append_choices_to_input")

  def part(name):
    data = store.parts(name)[0][1]
    return {k: data[k] for k in prefixes}, data["examples"][0]

  original = json.loads((task / "novel_concepts" / "task.json").read_text())
  got, first = part("novel_concepts")  # task_prefix + "\nQ: " + input: all recovered
  assert got == {"task_prefix": checkout_lib.NOVEL_PREFIX, "example_input_prefix": "\nQ: ",
                 "example_output_prefix": "\nA: ", "choice_prefix": "\n  choice: ", "append_choices_to_input": True}
  assert first == original["examples"][0]
  got, first = part("code_line_description")  # custom prefixes: the choice prefix and the output prefix
  assert got == {"task_prefix": "", "example_input_prefix": "", "choice_prefix": "\n  option: ",
                 "example_output_prefix": "\nEnglish language description:", "append_choices_to_input": True}
  assert first["input"] == "Python code:\n" + json.loads(
      (task / "code_line_description" / "task.json").read_text())["examples"][0]["input"]
  assert part("misconceptions")[0]["append_choices_to_input"] is False
  assert part("misconceptions")[0]["example_input_prefix"] == "\nQ: "
  got, first = part("logical_deduction")  # subtasks with different task prefixes: the text before the choices
  assert got["task_prefix"] == got["example_input_prefix"] == "" and first["input"].startswith("Q: logical")
  assert store.info("simple_arithmetic_json")["multiple_choice"] is False


def _row(idx, inputs, choices=("a", "b"), scores=(1, 0)):
  return {"idx": idx, "inputs": inputs, "targets": list(choices[:1]), "multiple_choice_targets": list(choices),
          "multiple_choice_scores": list(scores)}


def test_unformat_rules_by_hand():
  # choices b, a appended in RandomState(42)'s order of 2 (sorted: a, b -> permutation [1, 0]: b, a).
  assert sources.appended_order(["a", "b"]) == ["b", "a"]
  part = sources.unformat_rows("t", [_row(0, "Q: one\n  choice: b\n  choice: a\nA:")])
  assert part["examples"] == [{"input": "one", "target_scores": {"a": 1, "b": 0}}]
  assert (part["example_input_prefix"], part["example_output_prefix"]) == ("\nQ: ", "\nA: ")
  # Tails that differ between rows: no common output prefix, so the choices stay in the input, verbatim.
  rows = [_row(0, "Q: one\n  choice: b\n  choice: a\nA:"), _row(1, "Q: two\n  choice: b\n  choice: a\nAnswer:")]
  part = sources.unformat_rows("t", rows)
  assert part["append_choices_to_input"] is False and part["example_output_prefix"] == ""
  assert [e["input"] for e in part["examples"]] == ["one\n  choice: b\n  choice: a\nA:",
                                                    "two\n  choice: b\n  choice: a\nAnswer:"]
  for row, example in zip(rows, part["examples"]):
    assert bigbench.format_example(example, part).inputs == row["inputs"]
  # Choices that are not where BIG-bench appends them (another order): verbatim, still rendered unchanged.
  part = sources.unformat_rows("t", [_row(0, "Pick: a | b")])
  assert part["examples"][0]["input"] == "Pick: a | b" and part["append_choices_to_input"] is False
  assert bigbench.format_example(part["examples"][0], part).inputs == "Pick: a | b"
  generative = sources.unformat_rows("g", [dict(_row(0, "1 + 1 =", (), ()), targets=["2"])])
  assert generative["examples"] == [{"input": "1 + 1 =", "target": ["2"]}] and "target_scores" not in str(generative)


def test_rows_are_merged_in_idx_order_once():
  default = [_row(0, "x"), _row(1, "y"), _row(2, "z")]
  train, validation = [_row(2, "z"), _row(0, "x")], [_row(1, "y")]
  assert sources.merge_rows([default, train, validation]) == default
  assert sources.merge_rows([train, validation]) == default
  # The same idx with another content (a container whose subtasks were numbered apart) is kept, stably.
  assert [r["inputs"] for r in sources.merge_rows([[_row(1, "b"), _row(0, "a")], [_row(0, "c")]])] == ["a", "c", "b"]


def test_a_tampered_file_is_refused_naming_it(bigbench_checkout, tmp_path):
  folder = sources.build_store(bigbench_checkout, tmp_path)
  member = "novel_concepts/task.json"
  with zipfile.ZipFile(folder / "tasks.zip") as zf:
    files = {n: zf.read(n) for n in zf.namelist()}
  files[member] = files[member].replace(b"which goes with", b"which goes WITH")
  with zipfile.ZipFile(folder / "tasks.zip", "w") as zf:
    for name, data in files.items():
      zf.writestr(name, data)
  store = bigbench.BigBenchStore(folder)
  assert len(store.examples("anachronisms")) == 40  # the untouched files still read
  with pytest.raises(ValueError, match=r"tasks.zip:novel_concepts/task.json has sha256 [0-9a-f]{16}\.\.\., its "
                                       r"manifest records [0-9a-f]{16}\.\.\."):
    store.examples("novel_concepts")
  (folder / "index.json").write_text((folder / "index.json").read_text().replace('"num_examples": 32', '"num_examples": 33'))
  with pytest.raises(ValueError, match=r"BIG-bench store file index.json in .* is corrupted: sha256 [0-9a-f]{16}\.\.\. "
                                       r"differs from the manifest's [0-9a-f]{16}\.\.\.\. Rebuild it: rospr fetch"):
    bigbench.BigBenchStore(folder)


def test_github_files_are_pinned_at_their_first_download(forms, bigbench_checkout, tmp_path, monkeypatch):
  monkeypatch.setenv(sources.ENV_GITHUB_URL, forms["github"].as_uri())
  folder, built = sources.ensure_store("github", tmp_path)
  manifest = sources.read_store_manifest(folder)
  raw = (checkout_lib.tasks_dir(bigbench_checkout) / "winowhy" / "task.json").read_bytes()
  assert built and manifest["files"]["winowhy/task.json"] == hashlib.sha256(raw).hexdigest()
  assert manifest["source"] == {"form": "github", "repository": "google/BIG-bench", "commit": sources.GITHUB_COMMIT,
                                "key": f"github:google/BIG-bench@{sources.GITHUB_COMMIT}"}
  assert sources.ensure_store("github", tmp_path) == (folder, False)  # the same source: kept
  changed = tmp_path / "changed"
  shutil.copytree(bigbench_checkout, changed)
  (checkout_lib.tasks_dir(changed) / "winowhy" / "task.json").write_bytes(raw.replace(b"winowhy #0", b"winowhy #X"))
  monkeypatch.setenv(sources.ENV_GITHUB_URL, checkout_lib.write_tarball(
      tmp_path / "changed.tar.gz", changed, top=f"BIG-bench-{sources.GITHUB_COMMIT}").as_uri())
  with pytest.raises(ValueError, match=r"google/BIG-bench@092b196c1f8f: winowhy/task.json has sha256 .* but the "
                                       r"store recorded .* at its first download; refusing it"):
    sources.ensure_store("github", tmp_path, force=True)
  assert sources.read_store_manifest(folder) == manifest  # the store was left as it was


def test_bigbench_dir_follows_rospr_bigbench(forms, tmp_path, monkeypatch):
  assert not sources.bigbench_configured(tmp_path)
  with pytest.raises(FileNotFoundError) as e:
    sources.bigbench_dir(tmp_path)
  assert str(e.value) == sources.NOT_CONFIGURED
  monkeypatch.setenv("ROSPR_BIGBENCH", str(forms["checkout"] / "bigbench"))  # the `bigbench` folder is accepted
  assert sources.bigbench_configured(tmp_path)
  folder = sources.bigbench_dir(tmp_path)  # built now
  assert sources.read_store_manifest(folder)["source"]["form"] == "checkout"
  stamp = (folder / storage.MANIFEST).stat().st_mtime_ns
  assert sources.bigbench_dir(tmp_path) == folder and (folder / storage.MANIFEST).stat().st_mtime_ns == stamp
  monkeypatch.setenv("ROSPR_BIGBENCH", str(forms["tasksource"]))  # another source: rebuilt from it
  assert sources.read_store_manifest(sources.bigbench_dir(tmp_path))["source"]["form"] == "tasksource"
  monkeypatch.delenv("ROSPR_BIGBENCH")
  assert sources.bigbench_configured(tmp_path) and sources.bigbench_dir(tmp_path) == folder  # the store stays


def test_checkout_roots_and_json_task_py(bigbench_checkout, tmp_path):
  copy = shutil.copytree(bigbench_checkout, tmp_path / "copy")
  (copy / "bigbench" / "api").mkdir()
  (copy / "bigbench" / "api" / "json_task.py").write_text("# stand-in: the file is copied as it is\n")
  names = None
  for i, given in enumerate((copy, copy / "bigbench", copy / "bigbench" / "benchmark_tasks")):
    folder = sources.build_store(given, tmp_path / f"cache{i}")
    assert (folder / "json_task.py").read_text().startswith("# stand-in")
    store = bigbench.BigBenchStore(folder)
    assert names is None or store.task_names() == names
    names = store.task_names()
  assert "boolean_expressions" not in store.index and names == MC_TASKS


def test_concurrent_builds_of_one_store(bigbench_checkout, tmp_path):
  code = ("import sys; from rospr_jax.data import bigbench_sources as s; "
          "s.build_store(sys.argv[1], __import__('pathlib').Path(sys.argv[2]))")
  procs = [subprocess.Popen([sys.executable, "-c", code, str(bigbench_checkout), str(tmp_path)], cwd=ROOT)
           for _ in range(3)]
  assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
  store = bigbench.BigBenchStore(tmp_path / "bigbench")
  assert store.task_names() == MC_TASKS and len(store.examples("logical_deduction")) == 22
  assert sorted(p.name for p in tmp_path.iterdir()) == ["bigbench"]  # no temporary folder left


def _fetch(args, cache, **env):
  full = {k: v for k, v in os.environ.items() if k not in ("ROSPR_BIGBENCH", sources.ENV_GITHUB_URL)}
  full.update(ROSPR_CACHE=str(cache), **env)
  return subprocess.run([sys.executable, "-m", "rospr_jax.cli", "fetch", *args], cwd=ROOT, env=full,
                        capture_output=True, text=True, timeout=120)


def _one_line(result, *needles):
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr
  for needle in needles:
    assert needle in result.stderr
  return result.stderr


def test_rospr_fetch_bigbench_in_one_line(forms, tmp_path):
  url = "http://127.0.0.1:9/{commit}.tar.gz"  # nothing listens: as without network, but never downloads
  result = _fetch(["--bigbench", "github"], tmp_path, **{sources.ENV_GITHUB_URL: url})
  _one_line(result, "cannot download google/BIG-bench@092b196c1f8f from 127.0.0.1:9",
            "rospr fetch --bigbench PATH or ROSPR_BIGBENCH=PATH")
  assert result.returncode == 1
  result = _fetch(["--bigbench", "/nonexistent"], tmp_path)
  assert result.returncode == 2 and "BIG-bench source /nonexistent does not exist" in _one_line(result)
  (tmp_path / "empty" / "something").mkdir(parents=True)
  result = _fetch(["--bigbench", str(tmp_path / "empty")], tmp_path)
  assert result.returncode == 2 and "is none of the BIG-bench forms" in _one_line(result)
  result = _fetch(["--bigbench", str(forms["sdist"])], tmp_path)  # not the pinned sdist
  assert "not the pinned bigbench-1.0.0.tar.gz's" in _one_line(result)
  assert not (tmp_path / "bigbench").exists()
  result = _fetch(["--bigbench", str(forms["hails"])], tmp_path)
  assert result.returncode == 0 and "BIG-bench (hails, " in result.stdout and "16 multiple-choice tasks" in result.stdout
  result = _fetch(["--bigbench", str(forms["hails"])], tmp_path)
  assert result.returncode == 0 and "(up to date)" in result.stdout


def test_plain_rospr_fetch_builds_bigbench_from_the_environment(bigbench_checkout, tmp_path, monkeypatch, capsys):
  from rospr_jax.commands import fetch  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("ROSPR_CACHE", str(tmp_path))  # `--cache` sets it in os.environ: restored after the test
  monkeypatch.setattr(archives, "fetch_all", lambda cache, force=False: {})  # the index is not asked here
  assert fetch.main(["--cache", str(tmp_path)]) == 0
  assert "BIG-bench: not configured (optional)" in capsys.readouterr().out
  assert not (tmp_path / "bigbench").exists()
  monkeypatch.setenv("ROSPR_BIGBENCH", str(bigbench_checkout))
  assert fetch.main(["--cache", str(tmp_path)]) == 0
  assert "BIG-bench (checkout, " in capsys.readouterr().out and (tmp_path / "bigbench" / "tasks.zip").is_file()

  def offline(cache, force=False):
    raise ConnectionError("cannot reach pypi.org\n(no network)")

  monkeypatch.setattr(archives, "fetch_all", offline)
  assert fetch.main(["--cache", str(tmp_path)]) == 1
  assert capsys.readouterr().err == "rospr fetch: cannot reach pypi.org (no network)\n"


def _parquet_task(root: pathlib.Path, task: str, rows: list[dict]) -> pathlib.Path:
  """`root/<task>/train-00000-of-00001.parquet` holding `rows` as given (pyarrow infers the types)."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  (root / task).mkdir(parents=True, exist_ok=True)
  pq.write_table(pa.Table.from_pylist(rows), root / task / "train-00000-of-00001.parquet")
  return root / task / "train-00000-of-00001.parquet"


def test_hf_rows_that_would_be_read_wrong_are_refused_naming_file_row_task_and_column(tmp_path):
  """Was: scores shorter than the choices, or a choice given twice, cut the row to one choice (T0 and
  chance both 100%); a string or null field raised int() / TypeError naming nothing."""
  good = _row(0, "Q: one\n  choice: b\n  choice: a\nA:")
  cases = {  # task: (its rows, the row refused, what the line says); a parquet column has one type
      "short": ([good, _row(7, "Q: two", ("a", "b"), (1,))], "row 1 (idx 7)",
                "column multiple_choice_scores holds 1 scores for the 2 multiple_choice_targets"),
      "twice": ([good, _row(7, "Q: two", ("a", "a"), (1, 0))], "row 1 (idx 7)",
                "column multiple_choice_targets holds the choices ['a'] more than once"),
      "text_score": ([dict(good, multiple_choice_scores=["1", "0"])], "row 0 (idx 0)",
                     "column multiple_choice_scores holds ['1', '0'], not a list of finite numbers"),
      "no_input": ([good, dict(_row(7, "Q: two"), inputs=None)], "row 1 (idx 7)",
                   "column inputs holds None, not a string")}
  for task, (rows, row, says) in cases.items():
    path = _parquet_task(tmp_path / task, task, rows)
    with pytest.raises(sources.SourceError) as refused:
      sources.build_store(tmp_path / task, tmp_path / "cache")
    assert str(refused.value) == (f"{path}: {row} of BIG-bench task {task}: {says}; fix or remove the "
                                  "row and fetch again."), task
  assert not (tmp_path / "cache" / "bigbench").exists()
  result = _fetch(["--bigbench", str(tmp_path / "short")], tmp_path / "cache")  # as the user meets it
  assert result.returncode == 2 and "row 1 (idx 7) of BIG-bench task short: column multiple_choice_scores" in (
      _one_line(result))


def test_fractional_hf_scores_are_kept_and_the_highest_is_correct(tmp_path):
  """Was: [0.4, 0.6] read as int() became [0, 0], and the task "had no examples"."""
  rows = [_row(i, f"Q: q{i}\n  choice: b\n  choice: a\nA:", ("a", "b"), (0.4, 0.6)) for i in range(2)]
  _parquet_task(tmp_path / "hf", "fractions", rows)
  store = bigbench.BigBenchStore(sources.build_store(tmp_path / "hf", tmp_path / "cache"))
  (example, _) = store.examples("fractions")
  assert example.scores == (0.4, 0.6) and example.is_correct == (False, True) and example.target == "b"


def test_two_task_folders_registered_under_one_name_are_refused_naming_both(bigbench_checkout, tmp_path):
  """Was: `x y` and `x-y` both became `bigbench_x_y`, one silently lost."""
  tasks = tmp_path / "BIG-bench" / "bigbench" / "benchmark_tasks"
  shutil.copytree(checkout_lib.tasks_dir(bigbench_checkout) / "anachronisms", tasks / "x y")
  shutil.copytree(checkout_lib.tasks_dir(bigbench_checkout) / "anachronisms", tasks / "x-y")
  result = _fetch(["--bigbench", str(tmp_path / "BIG-bench")], tmp_path / "cache")
  assert result.returncode == 2 and ("the BIG-bench tasks 'x y' and 'x-y' would both be registered as bigbench_x_y, "
                                     "and one of them lost; rename or remove one of the folders.") in _one_line(result)
  assert not (tmp_path / "cache" / "bigbench").exists()
