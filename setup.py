"""rospr-jax: Retrieval of Soft Prompt (arXiv 2210.03029) in JAX / Flax, T5X and SeqIO style."""

import setuptools

# Ranges this code is tested with (install_requires), so that the package installs into an environment
# that has its own jax[tpu] (a TPU VM) or t5x's pins without pip refusing or downgrading them. The exact
# stack the test suite ran with is constraints.txt: `pip install -c constraints.txt -e ".[test,tpu]"`
# (scripts/setup.sh and CI install with it). Lower bounds: the tested versions (JAX 0.10.2 here, 0.11.2 on
# the GPU: bench/RESULTS.md); upper bounds: the next minor release of the 0.x libraries whose API moves.
INSTALL_REQUIRES = [
    # The compute core: runs on a bare JAX install (GPU / TPU machines).
    "jax>=0.10.2,<0.12",
    "jaxlib>=0.10.2,<0.12",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "tensorstore>=0.1.86,<0.2",
    "numpy>=2.4,<3",
    "safetensors>=0.4",
    "msgpack>=1.0",
    # Storage (rospr_jax/storage): paths at URLs through etils.epath on fsspec (storage/backend.py
    # turns tf.io.gfile off), gcsfs for gs:// and s3fs for s3://; the run lock through filelock.
    "etils[epath]>=1.7",
    "fsspec>=2026.9.0",
    "gcsfs>=2026.10.1",
    "s3fs>=2026.9.0",
    "filelock>=3.12",
    # Data, tasks and search. ScaNN 1.4.2 is built against TensorFlow 2.20: both held to that line.
    "seqio>=0.0.20,<0.1",
    "tensorflow>=2.20,<2.21",
    "tensorflow-text>=2.20,<2.21",
    "tensorflow-datasets>=4.9.10,<5",
    "importlib_resources",  # imported by tensorflow-datasets 4.9.10 without being declared.
    "scann>=1.4.2,<1.5",
    "gin-config>=0.5.0,<0.6",
    "sentencepiece>=0.2.3,<0.3",
    "jinja2>=3.1",
    "pyyaml>=6.0",
    "tqdm>=4.60",
    "matplotlib>=3.8",
]

EXTRAS_REQUIRE = {
    # `rospr plan --topology v4-8` compiles for Cloud TPU slices on any machine (no TPU needed) with
    # libtpu, as jax[tpu] pins it for the jax installed (constraints.txt: jax 0.10.2, libtpu 0.0.42.1,
    # 684 MB). An extra, not a default: the GPU image and a TPU VM (which brings its own libtpu) do not
    # need it; scripts/setup.sh installs it, so CI tests the plan. Without a TPU on the machine, `rospr`
    # keeps JAX from starting it (rospr_jax/platforms.py).
    "tpu": ["jax[tpu]>=0.10.2,<0.12"],
    # Reference comparisons: the CPU build of torch, and Hugging Face's T5.
    "test": [
        "pytest>=8",
        "pytest-xdist>=3.5",
        "torch>=2.13,<3",
        "transformers>=4.45",
        # Local object stores for the bucket tests (tests/conftest.py: bucket_servers).
        "gcp-storage-emulator>=2026.7.19",
        "moto[server]>=5.2.6,<6",
    ],
}

setuptools.setup(
    name="rospr-jax",
    version="0.1.0",
    description="Retrieval of Soft Prompt (RoSPr) for T0 in JAX / Flax with T5X and SeqIO.",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["rospr_jax", "rospr_jax.*"]) + ["rospr_tasks", "rospr_jax_gin"],
    package_dir={"rospr_tasks": "tasks", "rospr_jax_gin": "gin"},
    package_data={"rospr_jax_gin": ["*.gin", "*/*.gin"], "rospr_jax.data": ["offline_vocab/*"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["rospr=rospr_jax.cli:main"]},
)
