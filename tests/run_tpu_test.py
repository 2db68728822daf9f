"""`run_tpu.sh` against a fake `gcloud` that records its calls and runs the workers' commands here.

The fake keeps the VM's state in a folder: `describe` fails until `create` ran, `scp` copies the archive
to each worker's home, and `ssh --worker=all --command` runs the command once per worker in that
worker's home (the install and gcsfuse commands are recorded, not run: they would build a virtual
environment and mount buckets). Each
worker's `~/rospr-jax/.venv/bin/rospr` is a script that records its arguments and environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "run_tpu.sh")

FAKE_GCLOUD = r'''#!/usr/bin/env bash
# argv after "compute tpus tpu-vm": VERB NAME [flags]
set -e
python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@" >> "$STATE/calls.jsonl"
shift 3
verb=$1; shift
case "$verb" in
  describe)
    [[ -f "$STATE/created" ]] || exit 1
    for arg in "$@"; do [[ "$arg" == --format=* ]] && echo "$HOSTS"; done; exit 0 ;;
  create) touch "$STATE/created" ;;
  delete) rm -f "$STATE/created" ;;
  scp)
    for ((w = 0; w < HOSTS; w++)); do mkdir -p "$STATE/worker$w"; cp "$1" "$STATE/worker$w/rospr-jax.tar.gz"; done ;;
  ssh)
    command=""
    while [[ $# -gt 0 ]]; do [[ "$1" == --command ]] && command=$2; shift; done
    [[ "$command" == *"pip install"* || "$command" == *gcsfuse* ]] && exit 0
    status=0
    for ((w = 0; w < HOSTS; w++)); do
      mkdir -p "$STATE/worker$w"; HOME="$STATE/worker$w" WORKER=$w bash -c "$command" || status=$?
    done
    exit $status ;;
esac
'''

FAKE_ROSPR = r'''#!/usr/bin/env bash
python3 -c 'import json, os, sys; print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "worker": os.environ["WORKER"], "multihost": os.environ.get("ROSPR_MULTIHOST")}))' "$@" >> "$STATE/rospr.jsonl"
exit ${ROSPR_EXIT:-0}
'''


def _executable(path: str, text: str) -> None:
  with open(path, "w") as f:
    f.write(text)
  os.chmod(path, 0o755)


@pytest.fixture
def fake_cloud(tmp_path):
  """(run, state): `run(*flags, hosts=1, rospr_exit=0)` runs run_tpu.sh against the fake gcloud."""
  state = tmp_path / "state"
  state.mkdir()
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  _executable(str(bin_dir / "gcloud"), FAKE_GCLOUD)

  def run(*flags, hosts=1, rospr_exit=0):
    for w in range(hosts):  # what the (recorded, not run) install command leaves on each worker
      venv_bin = state / f"worker{w}" / "rospr-jax" / ".venv" / "bin"
      venv_bin.mkdir(parents=True, exist_ok=True)
      _executable(str(venv_bin / "rospr"), FAKE_ROSPR)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", STATE=str(state), HOSTS=str(hosts),
               ROSPR_EXIT=str(rospr_exit))
    return subprocess.run(["bash", SCRIPT, *flags], env=env, capture_output=True, text=True, timeout=120)

  return run, state


def _lines(path) -> list:
  return [json.loads(line) for line in open(path)] if os.path.exists(path) else []


def test_creates_the_vm_installs_and_runs_the_command_on_every_worker(fake_cloud):
  run, state = fake_cloud
  gin_dir = "--gin.MODEL_DIR='gs://bucket/run 1'"  # quotes and a space must reach rospr unchanged
  done = run("--name", "vm", "--zone", "us-central2-b", "--project", "proj", "--accelerator", "v4-32",
             "--spot", "--", "train-prompts", "--gin_file=gin/models/t0_3b.gin", gin_dir, hosts=4)
  assert done.returncode == 0, done.stderr
  calls = _lines(state / "calls.jsonl")
  verbs = [c[3] for c in calls]
  assert verbs == ["describe", "create", "describe", "scp", "ssh", "ssh"]
  create = calls[1]
  assert create[:5] == ["compute", "tpus", "tpu-vm", "create", "vm"]
  for flag, value in [("--zone", "us-central2-b"), ("--project", "proj"), ("--accelerator-type", "v4-32"),
                      ("--version", "tpu-ubuntu2204-base")]:
    assert create[create.index(flag) + 1] == value
  assert "--spot" in create
  assert all(c[c.index("--zone") + 1] == "us-central2-b" and "proj" in c for c in calls)
  assert all("--worker=all" in c for c in calls if c[3] in ("scp", "ssh"))
  install = calls[4][calls[4].index("--command") + 1]
  assert "pip install" in install and "rospr fetch" in install
  assert "-c constraints.txt -e '.[tpu]'" in install  # the tested stack, jax[tpu] and its libtpu
  assert subprocess.run(["bash", "-n", "-c", install]).returncode == 0

  with tarfile.open(state / "worker0" / "rospr-jax.tar.gz") as archive:
    names = set(archive.getnames())
  tracked = subprocess.run(["git", "-C", REPO, "ls-files"], capture_output=True, text=True,
                           check=True).stdout.split()
  assert set(tracked) <= names and "setup.py" in names and "constraints.txt" in names
  assert not any(n.startswith(".venv") for n in names)

  runs = _lines(state / "rospr.jsonl")
  assert sorted(r["worker"] for r in runs) == ["0", "1", "2", "3"]
  for r in runs:
    assert r["argv"] == ["train-prompts", "--gin_file=gin/models/t0_3b.gin", gin_dir]
    assert r["multihost"] == "1"
    assert r["cwd"].endswith(os.path.join(f"worker{r['worker']}", "rospr-jax"))


def test_reuses_a_vm_skips_install_and_passes_the_exit_status(fake_cloud):
  run, state = fake_cloud
  (state / "created").touch()
  done = run("--name", "vm", "--zone", "z", "--no-install", "--delete-after", "--", "evaluate", rospr_exit=3)
  assert done.returncode == 3
  assert "Reusing TPU VM vm" in done.stdout
  verbs = [c[3] for c in _lines(state / "calls.jsonl")]
  assert verbs == ["describe", "describe", "ssh", "delete"]  # deleted even though the command failed
  assert not (state / "created").exists()
  (single,) = _lines(state / "rospr.jsonl")
  assert single["argv"] == ["evaluate"] and single["multihost"] == "0"


def test_mounts_buckets_on_every_worker_before_the_command(fake_cloud):
  run, state = fake_cloud
  (state / "created").touch()
  done = run("--name", "vm", "--zone", "z", "--no-install", "--mount", "ckpts", "--mount", "runs.eu", "--",
             "evaluate", "--gin.OUTPUT_DIR='/gcs/runs.eu/eval'", hosts=2)
  assert done.returncode == 0, done.stderr
  calls = _lines(state / "calls.jsonl")
  assert [c[3] for c in calls] == ["describe", "describe", "ssh", "ssh"]
  mount = calls[2][calls[2].index("--command") + 1]
  assert "--worker=all" in calls[2]
  assert "apt-get install -y -q gcsfuse" in mount
  for bucket in ("ckpts", "runs.eu"):
    assert f"mountpoint -q /gcs/{bucket} || gcsfuse --implicit-dirs {bucket} /gcs/{bucket}" in mount
  assert "rospr" not in mount and "rospr" in calls[3][calls[3].index("--command") + 1]
  assert subprocess.run(["bash", "-n", "-c", mount]).returncode == 0  # the remote script parses
  assert len(_lines(state / "rospr.jsonl")) == 2


@pytest.mark.parametrize("flags,message", [
    (["--name", "vm", "--zone", "z", "--mount", "gs://b", "--", "evaluate"], "--mount takes a bucket name"),
    (["--zone", "z", "--", "evaluate"], "--name and --zone are required"),
    (["--name", "vm", "--zone", "z"], "give the rospr command after --"),
    (["--name", "vm", "--zone", "z", "--bogus", "--", "evaluate"], "unknown flag --bogus"),
])
def test_bad_flags_are_refused_before_any_gcloud_call(fake_cloud, flags, message):
  run, state = fake_cloud
  done = run(*flags)
  assert done.returncode == 2 and message in done.stderr
  assert _lines(state / "calls.jsonl") == []


def test_help_is_the_comment_block_and_says_that_urls_work():
  """`--help` prints the script's opening comment and nothing of its code; it names gs:// URLs as paths
  the commands take, and the bucket drivers the install brings."""
  done = subprocess.run(["bash", SCRIPT, "--help"], capture_output=True, text=True, check=True)
  lines = done.stdout.splitlines()
  assert lines and all(line.startswith("#") for line in lines), done.stdout
  assert "never gs://" not in done.stdout and "gs:// URLs given directly" in done.stdout
  assert "gcsfs and s3fs" in done.stdout and lines[-1] in open(SCRIPT).read().split("\nset -euo")[0]
