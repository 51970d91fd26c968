// Forward-only build of causal-conv1d's causal_conv1d_cuda (muse-tvr `make gpu-baselines`).
// causal_conv1d.cpp and causal_conv1d_fwd.cu are compiled unchanged; causal_conv1d_bwd.cu and
// causal_conv1d_update.cu are not. This file defines the instantiations causal_conv1d.cpp refers to,
// so `causal_conv1d_bwd` / `causal_conv1d_update` exist and raise.
#include <cstdint>
#include <cuda_runtime.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include "causal_conv1d.h"

#define MUSE_TVR_STUB(NAME, PARAMS)                                                              \
    template <typename input_t, typename weight_t>                                               \
    void NAME(PARAMS &params, cudaStream_t stream) {                                             \
        TORCH_CHECK(false, "causal_conv1d_cuda was built forward-only (muse-tvr make gpu-baselines): " \
                           #NAME " is not available");                                            \
    }                                                                                            \
    template void NAME<float, float>(PARAMS &, cudaStream_t);                                    \
    template void NAME<at::Half, float>(PARAMS &, cudaStream_t);                                 \
    template void NAME<at::BFloat16, float>(PARAMS &, cudaStream_t);                             \
    template void NAME<float, at::Half>(PARAMS &, cudaStream_t);                                 \
    template void NAME<at::Half, at::Half>(PARAMS &, cudaStream_t);                              \
    template void NAME<at::BFloat16, at::Half>(PARAMS &, cudaStream_t);                          \
    template void NAME<float, at::BFloat16>(PARAMS &, cudaStream_t);                             \
    template void NAME<at::Half, at::BFloat16>(PARAMS &, cudaStream_t);                         \
    template void NAME<at::BFloat16, at::BFloat16>(PARAMS &, cudaStream_t);

MUSE_TVR_STUB(causal_conv1d_bwd_cuda, ConvParamsBwd)
MUSE_TVR_STUB(causal_conv1d_channellast_bwd_cuda, ConvParamsBwd)
MUSE_TVR_STUB(causal_conv1d_update_cuda, ConvParamsBase)
