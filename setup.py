from setuptools import find_packages, setup

setup(
    name="tinyvae",
    version="0.1.0",
    description="A small, readable autodiff engine on NumPy/CuPy with Numba kernels, and the VAE family on top",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tinyvae", "tinyvae.*", "kernels", "kernels.*"]),
    install_requires=["numpy>=1.25", "numba>=0.59", "tqdm>=4.60", "pillow>=9.0", "safetensors>=0.4",
                      "matplotlib>=3.6"],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6.80", "numba-cuda>=0.10", "tensorboardX>=2.6", "rdkit>=2023.9",
                 "mpi4py>=4.0", "mpich>=4.1"],
        "mpi": ["mpi4py>=4.0", "mpich>=4.1"],
        "chem": ["rdkit>=2023.9"],
        "tensorboard": ["tensorboardX>=2.6"],
        "cuda": ["cupy-cuda12x>=13", "numba-cuda>=0.10"],
    },
    entry_points={"console_scripts": ["tinyvae=tinyvae.cli:main"]},
)
