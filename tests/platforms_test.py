"""Without a TPU on the machine, `rospr` keeps JAX from starting libtpu (installed by the `tpu` extra for
`rospr plan`): no start-up errors on stderr, no lock file taken."""

from __future__ import annotations

import importlib.util

import pytest

from rospr_jax import platforms

pytestmark = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu is not installed")


def _pci(root, *devices):
  for i, (vendor, device) in enumerate(devices):
    folder = root / f"0000:00:0{i}.0"
    folder.mkdir(parents=True)
    (folder / "vendor").write_text(vendor + "\n")
    (folder / "device").write_text(device + "\n")
  return str(root)


@pytest.mark.parametrize("devices", [[], [("0x8086", "0x1237")], [("0x1ae0", "0x0042")]],
                         ids=["no pci device", "an intel bridge", "a gVNIC card"])
def test_no_tpu_here_means_the_cpu(tmp_path, devices):
  environ = {}
  assert platforms.skip_absent_tpu(environ, _pci(tmp_path / "pci", *devices))
  assert environ == {"JAX_PLATFORMS": "cpu"}


def test_a_google_chip_or_a_choice_of_the_user_is_left_alone(tmp_path):
  tpu = _pci(tmp_path / "pci", ("0x1ae0", "0x005e"))  # a TPU v4 chip
  environ = {}
  assert not platforms.skip_absent_tpu(environ, tpu) and environ == {}
  for chosen in ({"JAX_PLATFORMS": ""}, {"JAX_PLATFORMS": "tpu"}, {"JAX_FORCE_TPU_INIT": "1"}):
    environ = dict(chosen)
    assert not platforms.skip_absent_tpu(environ, str(tmp_path / "none")) and environ == chosen
