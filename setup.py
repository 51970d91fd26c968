from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent

setup(
    name="muse-tvr",
    version="0.1.0",
    description="Inference engine for MUSE, the multi-scale Mamba model for text-video retrieval",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    author="muse-tvr authors",
    license="MIT",
    license_files=["LICENSE"],
    keywords=["text-video retrieval", "video search", "mamba", "clip", "onnx"],
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Intended Audience :: Developers",
        "Intended Audience :: Science/Research",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Topic :: Multimedia :: Video",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
    # The benchmark harness lives in benchmarks/ beside its committed results; the wheel ships it as
    # muse_tvr.bench so that `muse-tvr bench` works from an installed package.
    packages=find_packages(include=["muse_tvr", "muse_tvr.*"]) + ["muse_tvr.bench"],
    package_dir={"muse_tvr.bench": "benchmarks"},
    package_data={"muse_tvr": ["models/*/config.json", "models/*/model.safetensors", "models/*/training.json"],
                  "muse_tvr.engine": ["data/*.gz", "data/*.md"],
                  "muse_tvr.kernels.selective_scan": ["bi_scan.h", "bi_scan_torch.cpp"]},
    python_requires=">=3.10",
    # A range, not a pin: the GPU machines run torch 2.11; the Makefile pins the exact dev build.
    install_requires=[
        "torch>=2.11,<2.15",
        "numpy>=1.24",
        "safetensors>=0.4",
        "ftfy>=6.1",
        "regex>=2023.0",
        "tokenizers>=0.15",
        "pillow>=10.0",
        "av>=12.0",
        "tqdm>=4.60",
        "ninja>=1.11",  # torch's cpp_extension builds the C++ scan (the default CPU backend) with it
    ],
    extras_require={
        "export": ["onnx>=1.17", "onnxscript>=0.3", "onnxruntime>=1.21"],
        # `muse-tvr serve` and Triton clients. nvidia-pytriton itself is NOT listed: 0.7.0 declares
        # numpy<2 (only its Python-backend stub needs numpy 1, which serve gives a venv of its own), so
        # it is installed with --no-deps (Makefile); these are its other requirements.
        "serve": ["tritonclient[grpc,http]>=2.50", "grpcio>=1.64.3", "protobuf>=3.7", "pyzmq>=23.0", "sh>=1.14",
                  "typing_inspect>=0.6.0", "wrapt>=1.11", "typer>=0.9.0", "importlib_metadata>=7.0.1"],
        # past one machine: the FAISS index (`muse-tvr index`) and Ray encode (`encode --ray`)
        "scale": ["faiss-cpu>=1.8", "ray[data]>=2.30"],
        "dev": [
            "pytest>=8",
            "pytest-benchmark>=4",
            "open-clip-torch>=2.24",  # test oracle for the CLIP towers and the tokenizer only
            # imported when mamba-ssm's package loads (its reference functions are test oracles)
            "einops",
            "transformers",
            "triton>=3.5",  # kernels run under TRITON_INTERPRET=1 on CPU
            "onnx>=1.17",
            "onnxscript>=0.3",
            "onnxruntime>=1.21",
            "matplotlib>=3.7",
        ],
    },
    entry_points={"console_scripts": ["muse-tvr=muse_tvr.cli:main"]},
)
