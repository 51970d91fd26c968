// Forward-only build of mamba-ssm's selective_scan_cuda (muse-tvr `make gpu-baselines`).
// selective_scan.cpp is compiled unchanged; its backward kernels (selective_scan_bwd_*.cu) are not.
// This file defines the instantiations selective_scan.cpp refers to, so `bwd` exists and raises.
#include <cstdint>
#include <cuda_runtime.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>
#include <c10/util/complex.h>

#include "selective_scan.h"

template <typename input_t, typename weight_t>
void selective_scan_bwd_cuda(SSMParamsBwd &params, cudaStream_t stream) {
    TORCH_CHECK(false, "selective_scan_cuda was built forward-only (muse-tvr make gpu-baselines): "
                       "bwd is not available");
}

template void selective_scan_bwd_cuda<float, float>(SSMParamsBwd &, cudaStream_t);
template void selective_scan_bwd_cuda<float, c10::complex<float>>(SSMParamsBwd &, cudaStream_t);
template void selective_scan_bwd_cuda<at::Half, float>(SSMParamsBwd &, cudaStream_t);
template void selective_scan_bwd_cuda<at::Half, c10::complex<float>>(SSMParamsBwd &, cudaStream_t);
template void selective_scan_bwd_cuda<at::BFloat16, float>(SSMParamsBwd &, cudaStream_t);
template void selective_scan_bwd_cuda<at::BFloat16, c10::complex<float>>(SSMParamsBwd &, cudaStream_t);
