"""Install pokeagent: `pip install -e ".[dev]"` (scripts/setup.sh does it for you).

torch is listed as a range, not a pin: scripts/setup.sh installs the pinned torch first
(`torch==2.13.0`, or $POKEAGENT_TORCH_SPEC), and a range that the installed torch satisfies
makes pip install nothing more. An unpinned torch resolved here would drag in GBs of CUDA
packages on a CPU machine.
"""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="pokeagent",
    version="0.1.0",
    description="Train a transformer Pokémon Showdown agent on real replays with DeepSpeed.",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["pokeagent", "pokeagent.*"]),
    package_data={"pokeagent.showdown": ["*.js", "data/*.json.gz"]},
    install_requires=[
        "torch>=2.4",
        "deepspeed>=0.19.8,<0.20",
        "webdataset>=1.0.2,<2",
        "huggingface_hub>=2.4",  # pokeagent.data.hub uses its httpx2 session and errors
        "tensorboard>=2.16",
        "poke-env==0.16.1",
        "numpy>=1.26",
        "tqdm>=4.66",
        "psutil>=5.9",
        "safetensors>=0.4",
        "pyarrow>=14",
        "matplotlib>=3.7",
    ],
    extras_require={
        "dev": ["pytest>=8", "pytest-timeout>=2.3", "ruff==0.17.6"],
    },
    entry_points={"console_scripts": ["pokeagent=pokeagent.cli:main"]},
)
