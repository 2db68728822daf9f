"""rospr-jax: Retrieval of Soft Prompt (arXiv 2210.03029) in JAX / Flax, T5X and SeqIO style."""

import setuptools

INSTALL_REQUIRES = [
    # The compute core: runs on a bare JAX install (GPU / TPU machines).
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "tensorstore==0.1.86",
    "numpy>=2.4,<2.5",
    "safetensors>=0.4",
    "msgpack>=1.0",
    # Storage (rospr_jax/storage): paths at URLs through etils.epath on fsspec (storage/backend.py
    # turns tf.io.gfile off), gcsfs for gs:// and s3fs for s3://; the run lock through filelock.
    "etils[epath]>=1.7",
    "fsspec==2026.9.0",
    "gcsfs==2026.10.1",
    "s3fs==2026.9.0",
    "filelock>=3.12",
    # Data, tasks and search. ScaNN 1.4.2 is built against TensorFlow 2.20: pin it.
    "seqio==0.0.20",
    "tensorflow==2.20.*",
    "tensorflow-text==2.20.*",
    "tensorflow-datasets==4.9.10",
    "importlib_resources",  # imported by tensorflow-datasets 4.9.10 without being declared.
    "scann==1.4.2",
    "gin-config==0.5.0",
    "sentencepiece==0.2.3",
    "jinja2>=3.1",
    "pyyaml>=6.0",
    "tqdm>=4.60",
    "matplotlib>=3.8",
]

EXTRAS_REQUIRE = {
    # `rospr plan --topology v4-8` compiles for Cloud TPU slices on any machine (no TPU needed) with
    # libtpu, as jax[tpu] pins it for this jax (684 MB). An extra, not a default: the GPU image and a
    # TPU VM (which brings its own libtpu) do not need it; scripts/setup.sh installs it, so CI tests the
    # plan. Without a TPU on the machine, `rospr` keeps JAX from starting it (rospr_jax/platforms.py).
    "tpu": ["jax[tpu]==0.10.2"],
    # Reference comparisons: the CPU build of torch that lies on disk, and Hugging Face's T5.
    "test": [
        "pytest>=8",
        "pytest-xdist>=3.5",
        "torch==2.13.0",
        "transformers>=4.45",
        # Local object stores for the bucket tests (tests/conftest.py: bucket_servers).
        "gcp-storage-emulator==2026.7.19",
        "moto[server]==5.2.6",
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
