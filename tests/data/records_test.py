"""Local dataset files: JSON lines, Hugging Face on-disk arrow, the opt-in hub path, and errors."""

from __future__ import annotations

import json
import sys
import time
import types

import pyarrow as pa
import pytest

from rospr_jax.data import records


def _write_jsonl(path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _write_hf_arrow(folder, split, rows, chunks=2):
  """The layout `DatasetDict.save_to_disk` writes: dataset_dict.json, <split>/{state.json, data-*.arrow}."""
  split_dir = folder / split
  split_dir.mkdir(parents=True)
  (folder / "dataset_dict.json").write_text(json.dumps({"splits": [split]}))
  table = pa.Table.from_pylist(rows)
  names = []
  per = -(-len(rows) // chunks)
  for k in range(chunks):
    name = f"data-{k:05d}-of-{chunks:05d}.arrow"
    with pa.OSFile(str(split_dir / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
      writer.write_table(table.slice(k * per, per))
    names.append(name)
  (split_dir / "state.json").write_text(json.dumps({"_data_files": [{"filename": n} for n in names]}))


ROWS = [{"premise": f"p{i}", "hypothesis": "h", "label": i % 3,
         "answers": {"text": [f"a{i}"], "answer_start": [i]}} for i in range(5)]


def test_jsonl_and_arrow_read_the_same_records(tmp_path):
  _write_jsonl(tmp_path / "anli" / "dev_r1.jsonl", ROWS)
  _write_hf_arrow(tmp_path / "super_glue" / "rte", "validation", ROWS)
  assert list(records.iter_records("anli", None, "dev_r1", tmp_path)) == ROWS
  assert list(records.iter_records("super_glue", "rte", "validation", tmp_path)) == ROWS
  assert records.count_split("super_glue", "rte", "validation", tmp_path).examples == 5
  assert records.locate("anli", None, "dev_r1", tmp_path).kind == "jsonl"


def test_data_dir_from_environment(tmp_path, monkeypatch):
  monkeypatch.setenv("ROSPR_DATA_DIR", str(tmp_path))
  _write_jsonl(tmp_path / "imdb" / "train.jsonl", [{"text": "t", "label": 1}])
  assert list(records.iter_records("imdb", None, "train")) == [{"text": "t", "label": 1}]


def test_missing_dataset_fails_fast_with_instructions(tmp_path, monkeypatch):
  monkeypatch.delenv("ROSPR_HF_HUB", raising=False)
  start = time.time()
  with pytest.raises(records.DatasetNotFoundError) as info:
    records.iter_records("super_glue", "cb", "validation", tmp_path)
  assert time.time() - start < 1.0
  message = str(info.value)
  assert "no data for super_glue/cb split 'validation'" in message
  assert str(tmp_path / "super_glue" / "cb" / "validation.jsonl") in message
  assert "ROSPR_DATA_DIR" in message and "ROSPR_HF_HUB=1" in message
  assert records.count_split("super_glue", "cb", "validation", tmp_path) is None


def test_malformed_json_lines(tmp_path):
  path = tmp_path / "imdb" / "train.jsonl"
  path.parent.mkdir(parents=True)
  path.write_text('{"text": "ok", "label": 1}\n\n{"text": "broken",\n[1, 2]\n{"text": "ok2", "label": 0}\n')
  with pytest.raises(ValueError, match=r"train.jsonl: line 3 is not valid JSON"):
    list(records.iter_records("imdb", None, "train", tmp_path))
  count = records.count_split("imdb", None, "train", tmp_path)
  assert count.examples == 2 and count.bad_lines == (3, 4)
  path.write_text('[1, 2]\n')
  with pytest.raises(ValueError, match=r"line 1 is a JSON list, expected an object"):
    list(records.iter_records("imdb", None, "train", tmp_path))


def test_corrupt_arrow_file(tmp_path):
  (tmp_path / "imdb" / "train").mkdir(parents=True)
  (tmp_path / "imdb" / "train" / "data-00000-of-00001.arrow").write_bytes(b"not arrow")
  with pytest.raises(ValueError, match=r"data-00000-of-00001.arrow: not a Hugging Face arrow file"):
    list(records.iter_records("imdb", None, "train", tmp_path))


def test_hub_only_when_enabled(tmp_path, monkeypatch):
  calls = []
  fake = types.ModuleType("datasets")
  fake.__spec__ = types.SimpleNamespace(name="datasets")  # what importlib.util.find_spec reads

  def load_dataset(name, subset, split):
    calls.append((name, subset, split))
    return iter([{"text": "from the hub", "label": 0}])

  fake.load_dataset = load_dataset
  monkeypatch.setitem(sys.modules, "datasets", fake)
  monkeypatch.delenv("ROSPR_HF_HUB", raising=False)
  with pytest.raises(records.DatasetNotFoundError):
    records.iter_records("imdb", None, "train", tmp_path)
  monkeypatch.setenv("ROSPR_HF_HUB", "1")
  assert list(records.iter_records("imdb", None, "train", tmp_path)) == [{"text": "from the hub", "label": 0}]
  assert calls == [("imdb", None, "train")]
