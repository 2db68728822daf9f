"""The archives cache: checksums, atomic and idempotent downloads, extraction, clear errors; the
BIG-bench sdist as a source (only through a test archive pinned in its place)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tarfile
import zipfile

import pytest

from rospr_jax import storage
from rospr_jax.data import archives
from rospr_jax.data import bigbench
from rospr_jax.data import bigbench_sources


def _spec_for(payload: bytes, name="demo") -> archives.ArchiveSpec:
  return archives.ArchiveSpec(project=name, version="1.0", sha256=hashlib.sha256(payload).hexdigest(),
                              size=len(payload))


def _tar_gz(members: dict[str, bytes]) -> bytes:
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode="w:gz") as tar:
    for name, data in members.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  return buf.getvalue()


def test_fetch_is_checksummed_atomic_and_idempotent(tmp_path):
  payload = b"archive bytes" * 100
  spec = _spec_for(payload)
  calls = []

  def download(s, dest):
    calls.append(s.filename)
    dest.write_bytes(payload)

  path = archives.fetch_archive(spec, tmp_path, download)
  assert path == tmp_path / "archives" / "demo-1.0.tar.gz" and path.read_bytes() == payload
  assert archives.fetch_archive(spec, tmp_path, download) == path and calls == ["demo-1.0.tar.gz"]
  path.write_bytes(b"corrupted")  # a damaged cache file is downloaded again
  archives.fetch_archive(spec, tmp_path, download)
  assert path.read_bytes() == payload and len(calls) == 2


def test_wrong_checksum_leaves_nothing(tmp_path):
  spec = _spec_for(b"expected")
  with pytest.raises(ValueError, match=f"demo-1.0.tar.gz has sha256 {hashlib.sha256(b'other').hexdigest()}, "
                                       f"expected {spec.sha256}"):
    archives.fetch_archive(spec, tmp_path, lambda s, dest: dest.write_bytes(b"other"))
  assert list((tmp_path / "archives").iterdir()) == []


def test_failed_download_leaves_nothing(tmp_path):
  def download(s, dest):
    dest.write_bytes(b"half")
    raise ConnectionError("network down")

  with pytest.raises(ConnectionError):
    archives.fetch_archive(_spec_for(b"x"), tmp_path, download)
  assert list((tmp_path / "archives").iterdir()) == []


def test_readers_name_rospr_fetch_when_cache_is_empty(tmp_path, monkeypatch):
  with pytest.raises(FileNotFoundError, match=r"promptsource templates are not in the cache .*run `rospr fetch`"):
    archives.promptsource_dir(tmp_path)
  monkeypatch.delenv("ROSPR_BIGBENCH", raising=False)
  with pytest.raises(FileNotFoundError, match=r"^BIG-bench is not configured: give a source with `rospr fetch "):
    bigbench_sources.bigbench_dir(tmp_path)


def test_extract_promptsource(tmp_path):
  root = "promptsource-0.2.3/promptsource/"
  archive = tmp_path / "ps.tar.gz"
  archive.write_bytes(_tar_gz({
      root + "templates/imdb/templates.yaml": b"dataset: imdb\ntemplates: {}\n",
      root + "templates/glue/mrpc/templates.yaml": b"dataset: glue\nsubset: mrpc\ntemplates: {}\n",
      root + "templates.py": b"# reference\n",
      root + "app.py": b"# not needed\n",
  }))
  folder = archives.extract_promptsource(archive, tmp_path)
  assert archives.promptsource_dir(tmp_path) == folder
  assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
      "manifest.json", "templates.py", "templates/glue/mrpc/templates.yaml", "templates/imdb/templates.yaml"]
  # A manifest from another archive is refused.
  (folder / "manifest.json").write_text(json.dumps({"sha256": "0" * 64}))
  with pytest.raises(FileNotFoundError):
    archives.promptsource_dir(tmp_path)


def _pin_sdist(monkeypatch, archive: bytes) -> None:
  """archives.BIGBENCH pinned to a test archive (the real sdist is no longer served)."""
  monkeypatch.setattr(archives, "BIGBENCH", dataclasses.replace(
      archives.BIGBENCH, sha256=hashlib.sha256(archive).hexdigest(), size=len(archive)))


def test_build_bigbench_store_from_an_sdist(tmp_path, monkeypatch):
  root = "bigbench-1.0.0/bigbench/benchmark_tasks/"
  mc = {"name": "mc", "metrics": ["multiple_choice_grade"],
        "examples": [{"input": "q", "target_scores": {"a": 1, "b": 0}}] * 3}
  gen = {"name": "gen", "metrics": ["exact_str_match"], "examples": [{"input": "q", "target": "a"}]}
  payload = _tar_gz({
      root + "simple/task.json": json.dumps(mc).encode(),
      root + "generative/task.json": json.dumps(gen).encode(),
      root + "container/task.json": json.dumps({"name": "container"}).encode(),
      root + "container/two/task.json": json.dumps(dict(mc, name="two")).encode(),
      root + "container/one/task.json": json.dumps(dict(mc, name="one")).encode(),
      "bigbench-1.0.0/bigbench/api/json_task.py": b"# stand-in for BIG-bench's formatting code\n",
  })
  archive = tmp_path / "bigbench-1.0.0.tar.gz"
  archive.write_bytes(payload)
  with pytest.raises(ValueError, match=r"bigbench-1.0.0.tar.gz has sha256 [0-9a-f]{64}, not the pinned"):
    bigbench_sources.build_store(archive, tmp_path)  # not the pinned sdist: refused
  _pin_sdist(monkeypatch, payload)
  folder = bigbench_sources.build_store(archive, tmp_path)
  assert folder == tmp_path / "bigbench"
  index = json.loads((folder / "index.json").read_text())["tasks"]
  assert index["container"] == {"subtasks": ["one", "two"], "multiple_choice": True, "num_examples": 6,
                                "num_distinct_examples": 2}
  assert index["generative"]["multiple_choice"] is False and index["simple"]["num_distinct_examples"] == 1
  with zipfile.ZipFile(folder / "tasks.zip") as zf:
    assert sorted(zf.namelist()) == ["container/one/task.json", "container/task.json", "container/two/task.json",
                                     "simple/task.json"]
  store = bigbench.BigBenchStore(folder)
  assert store.task_names() == ["container", "simple"]
  assert [e.subtask for e in store.examples("container")] == ["one", "two"]
  assert (folder / "json_task.py").exists()
  manifest = bigbench_sources.read_store_manifest(folder)
  assert manifest["source"]["form"] == "sdist" and manifest["source"]["sha256"] == archives.BIGBENCH.sha256
  assert manifest["files"]["simple/task.json"] == hashlib.sha256(json.dumps(mc).encode()).hexdigest()


def test_broken_json_in_archive(tmp_path, monkeypatch):
  payload = _tar_gz({"bigbench-1.0.0/bigbench/benchmark_tasks/bad/task.json": b"{not json"})
  archive = tmp_path / "bigbench-1.0.0.tar.gz"
  archive.write_bytes(payload)
  _pin_sdist(monkeypatch, payload)
  with pytest.raises(ValueError, match=r"bad/task.json is not valid JSON"):
    bigbench_sources.build_store(archive, tmp_path)
  assert not (tmp_path / "bigbench").exists()


def test_fetch_all_prepares_once(tmp_path, monkeypatch):
  """fetch_all with a fake index: every archive still served is 'downloaded' once, prepared once;
  BIG-bench is not fetched (the index no longer serves it)."""
  ps = _tar_gz({"promptsource-0.2.3/promptsource/templates/imdb/templates.yaml": b"templates: {}\n"})
  wheel = b"wheel"
  payloads = {"promptsource": ps, "t5": wheel}
  for name, spec in (("PROMPTSOURCE", archives.PROMPTSOURCE), ("T5_WHEEL", archives.T5_WHEEL)):
    payload = payloads[spec.project]
    monkeypatch.setattr(archives, name, dataclasses.replace(spec, sha256=hashlib.sha256(payload).hexdigest(),
                                                            size=len(payload)))
  calls = []

  def download(spec, dest):
    calls.append(spec.project)
    dest.write_bytes(payloads[spec.project])

  logs = []
  done = archives.fetch_all(tmp_path, download, log=logs.append)
  assert sorted(calls) == ["promptsource", "t5"] and len(done) == 2
  archives.fetch_all(tmp_path, download, log=logs.append)
  assert len(calls) == 2 and sum("up to date" in line for line in logs) == 1
  assert not (tmp_path / "bigbench").exists() and not (tmp_path / "bigbench-1.0.0").exists()


def test_real_archives_match_their_pins():
  for spec in archives.ARCHIVES:
    path = archives.archive_path(spec)
    if not path.exists():
      pytest.fail(f"{path} is missing; run `rospr fetch`", pytrace=False)
    assert path.stat().st_size == spec.size and storage.sha256_file(path) == spec.sha256
