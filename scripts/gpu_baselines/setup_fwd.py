"""Builds the forward-only CUDA extensions selective_scan_cuda (mamba-ssm) and causal_conv1d_cuda
(causal-conv1d) from their unpacked sdists, for sm_90 only. Run by scripts/build_gpu_baselines.sh:

    MUSE_TVR_MAMBA_SRC=... MUSE_TVR_CONV_SRC=... MUSE_TVR_LINK_DIR=... TORCH_CUDA_ARCH_LIST=9.0 \
        python setup_fwd.py build_ext --build-lib OUT --build-temp TMP

The nvcc flags are the upstream setup.py's (minus its -gencode list and --threads); the -gencode comes
from TORCH_CUDA_ARCH_LIST=9.0, i.e. -gencode=arch=compute_90,code=sm_90 and no PTX.
"""
import os
from pathlib import Path

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CUDAExtension

HERE = Path(__file__).resolve().parent
MAMBA = Path(os.environ["MUSE_TVR_MAMBA_SRC"]) / "csrc" / "selective_scan"
CONV = Path(os.environ["MUSE_TVR_CONV_SRC"]) / "csrc"
LINK = ["-L" + os.environ["MUSE_TVR_LINK_DIR"]] if os.environ.get("MUSE_TVR_LINK_DIR") else []

NVCC_COMMON = [
    "-O3",
    "-U__CUDA_NO_HALF_OPERATORS__",
    "-U__CUDA_NO_HALF_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT16_OPERATORS__",
    "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT162_OPERATORS__",
    "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
    "--expt-relaxed-constexpr",
    "--expt-extended-lambda",
    "--use_fast_math",
    "-lineinfo",
]
ONLY = [s for s in os.environ.get("MUSE_TVR_ONLY", "selective_scan_cuda causal_conv1d_cuda").split()]

ext_modules = []
if "selective_scan_cuda" in ONLY:
    ext_modules.append(CUDAExtension(
        name="selective_scan_cuda",
        sources=[str(MAMBA / "selective_scan.cpp"),
                 str(HERE / "selective_scan_bwd_stub.cpp"),
                 str(MAMBA / "selective_scan_fwd_fp32.cu"),
                 str(MAMBA / "selective_scan_fwd_fp16.cu"),
                 str(MAMBA / "selective_scan_fwd_bf16.cu")],
        include_dirs=[str(MAMBA)],
        extra_compile_args={"cxx": ["-O3", "-std=c++17"], "nvcc": ["-std=c++17"] + NVCC_COMMON},
        extra_link_args=LINK,
    ))
if "causal_conv1d_cuda" in ONLY:
    ext_modules.append(CUDAExtension(
        name="causal_conv1d_cuda",
        sources=[str(CONV / "causal_conv1d.cpp"),
                 str(HERE / "causal_conv1d_bwd_stub.cpp"),
                 str(CONV / "causal_conv1d_fwd.cu")],
        include_dirs=[str(CONV)],
        extra_compile_args={"cxx": ["-O3"], "nvcc": NVCC_COMMON},
        extra_link_args=LINK,
    ))

setup(name="muse-tvr-gpu-baselines", ext_modules=ext_modules,
      cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)})
