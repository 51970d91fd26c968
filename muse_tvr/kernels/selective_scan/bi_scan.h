// The bidirectional selective scan on CPU: the kernel behind muse::BiSelectiveScan in the ORT op library
// (cpp/muse_ort_ops.cc) and the PyTorch CPU extension (bi_scan_torch.cpp next to this file).
//
// Math (muse_tvr/kernels/selective_scan/reference.py, bidirectional_scan_ref), per batch row b, channel d:
//   dt_t = softplus(delta_t + bias)            (identity above 20, as mamba-ssm)
//   s_t  = exp(dt_t * A[d, :]) * s_prev + dt_t * u_t * B_t[:]      state of N floats, s = 0 before the scan
//   y_t  = s_t . C_t + D[d] * u_t
// forward walks t = 0..L-1, backward t = L-1..0 with its own inputs; out = silu(z) * (y_f + y_b).
//
// Layout: token-major (B, L, D) for u/delta/z/out, (B, L, N) for B/C, (D, N) for A, (D,) for D and bias;
// all contiguous. Activations are float or fp16 (converted on load/store); parameters and state are float.
//
// Why it is fast: work is split into items of 16 channels of one batch row; threads take items. Inside an
// item the state is a [N][16] float array (L1-resident) and every inner loop runs over the 16 channels
// with fixed trip count, so the compiler vectorises it (exp and log are polynomial, branch-free, no libm
// calls). The forward pass keeps y_f in a per-item float buffer; the backward pass adds y_b and applies the
// gate in the same sweep, so each output element is written once.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace muse {

constexpr int kChannels = 16;  // channels per work item (one AVX-512 or two AVX2 registers)

// exp(x) for x <= 88: 2^n * p(r), r = x - n ln2 in [-ln2/2, ln2/2], degree-6 Taylor (rel. err ~1e-7).
static inline float exp_poly(float x) {
  const float xc = std::min(std::max(x, -87.0f), 88.0f);
  const float n = std::floor(xc * 1.44269504088896341f + 0.5f);
  const float r = (xc - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < -87.0f ? 0.0f : p * scale;
}

// log(v) for v >= 1 (here v = 1 + exp(x)): v = 2^k m, m in [sqrt(1/2), sqrt(2)), atanh series in s.
static inline float log_poly(float v) {
  int32_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  int32_t k = ((bits >> 23) & 0xff) - 127;
  int32_t mbits = (bits & 0x007fffff) | 0x3f800000;  // m in [1, 2)
  float m;
  std::memcpy(&m, &mbits, sizeof(m));
  const bool big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  k = big ? k + 1 : k;
  const float s = (m - 1.0f) / (m + 1.0f);
  const float s2 = s * s;
  float p = 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
  p = p * s2 + 1.0f;
  return static_cast<float>(k) * 0.69314718055994531f + 2.0f * s * p;
}

// mamba-ssm's softplus: x above 20, else log1p(exp(x)); the correction term recovers the bits of exp(x)
// lost when rounding 1 + e, so small dt keeps its relative accuracy.
static inline float softplus_poly(float x) {
  const float e = exp_poly(std::min(x, 20.0f));
  const float v = 1.0f + e;
  const float lp = log_poly(v) - ((v - 1.0f) - e) / v;
  return x > 20.0f ? x : lp;
}

inline float to_float(float x) { return x; }
inline void from_float(float x, float* out) { *out = x; }

struct ScanDirection {
  const void* u;
  const void* delta;
  const void* B;
  const void* C;
  const float* A;     // (D, N)
  const float* D;     // (D,)
  const float* bias;  // (D,)
};

// One item: batch row b, channels [d0, d0 + nc), nc <= 16. T is the activation type; Load/Store convert.
template <typename T, typename Load, typename Store>
void scan_item(const ScanDirection& fwd, const ScanDirection& bwd, const T* z, T* out, int64_t b, int64_t L,
               int64_t Dm, int64_t N, int64_t d0, int nc, std::vector<float>& yf, std::vector<float>& state,
               Load load, Store store) {
  constexpr int K = kChannels;
  yf.assign(static_cast<size_t>(L) * K, 0.0f);
  state.assign(static_cast<size_t>(N) * K, 0.0f);
  float At[64 * K];  // A transposed to [N][K] for this item (N <= 64)
  float Dv[K], bias[K], u[K], dl[K], dt[K], du[K], y[K], e[K], zz[K];
  for (int pass = 0; pass < 2; ++pass) {
    const ScanDirection& dir = pass == 0 ? fwd : bwd;
    const T* U = static_cast<const T*>(dir.u) + b * L * Dm;
    const T* DL = static_cast<const T*>(dir.delta) + b * L * Dm;
    const T* Bm = static_cast<const T*>(dir.B) + b * L * N;
    const T* Cm = static_cast<const T*>(dir.C) + b * L * N;
    for (int64_t n = 0; n < N; ++n)
      for (int c = 0; c < K; ++c) At[n * K + c] = c < nc ? dir.A[(d0 + c) * N + n] : 0.0f;
    for (int c = 0; c < K; ++c) {
      Dv[c] = c < nc ? dir.D[d0 + c] : 0.0f;
      bias[c] = c < nc ? dir.bias[d0 + c] : 0.0f;
    }
    std::fill(state.begin(), state.end(), 0.0f);
    float* S = state.data();
    for (int64_t step = 0; step < L; ++step) {
      const int64_t t = pass == 0 ? step : L - 1 - step;
      const int64_t row = t * Dm + d0;
      for (int c = 0; c < K; ++c) {
        u[c] = c < nc ? load(U[row + c]) : 0.0f;
        dl[c] = c < nc ? load(DL[row + c]) : 0.0f;
      }
      for (int c = 0; c < K; ++c) {
        dt[c] = softplus_poly(dl[c] + bias[c]);
        du[c] = dt[c] * u[c];
        y[c] = Dv[c] * u[c];
      }
      for (int64_t n = 0; n < N; ++n) {
        const float bn = load(Bm[t * N + n]);
        const float cn = load(Cm[t * N + n]);
        float* s = S + n * K;
        const float* a = At + n * K;
        for (int c = 0; c < K; ++c) {
          e[c] = exp_poly(dt[c] * a[c]);
          s[c] = e[c] * s[c] + du[c] * bn;
          y[c] += s[c] * cn;
        }
      }
      float* acc = yf.data() + t * K;
      if (pass == 0) {
        for (int c = 0; c < K; ++c) acc[c] = y[c];
      } else {
        for (int c = 0; c < K; ++c) zz[c] = c < nc ? load(z[b * L * Dm + row + c]) : 0.0f;
        for (int c = 0; c < K; ++c) {
          const float sig = 1.0f / (1.0f + exp_poly(-zz[c]));
          y[c] = (acc[c] + y[c]) * zz[c] * sig;
        }
        T* o = out + b * L * Dm + row;
        for (int c = 0; c < nc; ++c) store(y[c], &o[c]);
      }
    }
  }
}

// Work items: one (batch row, 16-channel block) each; all cost the same.
inline int64_t bi_scan_items(int64_t Bt, int64_t Dm) { return Bt * ((Dm + kChannels - 1) / kChannels); }

// Runs work item `i` of bi_scan_items(Bt, Dm). Items write disjoint outputs, so any thread pool may run them.
template <typename T, typename Load, typename Store>
void bi_scan_item(int64_t i, const ScanDirection& fwd, const ScanDirection& bwd, const T* z, T* out, int64_t L,
                  int64_t Dm, int64_t N, std::vector<float>& yf, std::vector<float>& state, Load load, Store store) {
  const int64_t blocks = (Dm + kChannels - 1) / kChannels;
  const int64_t b = i / blocks, d0 = (i % blocks) * kChannels;
  const int nc = static_cast<int>(std::min<int64_t>(kChannels, Dm - d0));
  scan_item<T>(fwd, bwd, z, out, b, L, Dm, N, d0, nc, yf, state, load, store);
}

}  // namespace muse
