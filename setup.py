"""Packaging of fastmtl: every ``fastmtl.*`` package, the ``fastmtl`` command and the optional extras."""
import re

from setuptools import find_packages, setup

VERSION = re.search(r'__version__ = "([^"]+)"', open("fastmtl/__init__.py", encoding="utf-8").read()).group(1)

setup(
    name="fastmtl",
    version=VERSION,
    description="Fast multi-task dense prediction (semantic segmentation, depth, surface normals) in PyTorch, with Triton kernels",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["fastmtl", "fastmtl.*"]),
    install_requires=[
        "torch>=2.6",
        "numpy",
        "pillow",
        "tqdm",
        "tensorboard",
        "triton; sys_platform == 'linux'",
    ],
    extras_require={
        # torchvision==0.28.0 is the release whose torch pin is CI's torch==2.13.0: an unpinned timm
        # would resolve torchvision 0.29.x, which replaces the CPU torch with torch 2.14 (CUDA)
        "dev": ["pytest", "pytest-benchmark", "onnx", "onnxruntime", "timm", "torchvision==0.28.0", "submitit>=1.5"],
        "export": ["onnx", "onnxruntime"],
        "slurm": ["submitit>=1.5"],  # fastmtl sweep --launcher slurm
        "timm": ["timm"],
    },
    entry_points={"console_scripts": ["fastmtl = fastmtl.cli:main"]},
)
