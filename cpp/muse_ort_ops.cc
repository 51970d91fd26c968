// ONNX Runtime custom-op library for muse-tvr's exported models (domain "muse").
//
// Kernels registered (the op contract is muse_tvr/kernels/contracts.py; tests compare this list with it):
//   muse::BiSelectiveScan  float   and  float16 activations (A, D, dt bias always float)
// MusePyramidSequence has no C++ kernel: export the pyramid decomposed (the default), or load a file that
// carries its function body (portable / plugin variants), which ONNX Runtime inlines.
//
// Load it from Python with SessionOptions.register_custom_ops_library(path), from C++ with
// Ort::SessionOptions::RegisterCustomOpsLibrary(path). Threads: the session's intra-op thread pool
// (intra_op_num_threads), through the kernel context's ParallelFor; the library starts no threads itself.
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#undef ORT_API_MANUAL_INIT
#include "onnxruntime_lite_custom_op.h"

#include "bi_scan.h"  // muse_tvr/kernels/selective_scan/, on the include path (Makefile SCAN_DIR)

namespace {

using Ort::Custom::Tensor;

std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << (s.size() == 1 ? ",)" : ")");
  return os.str();
}

Ort::Status bad(const std::string& msg) {
  return Ort::Status(("muse::BiSelectiveScan: " + msg).c_str(), ORT_INVALID_ARGUMENT);
}

template <typename T>
struct ScanJob {
  const muse::ScanDirection* fwd;
  const muse::ScanDirection* bwd;
  const T* z;
  T* out;
  int64_t L, Dm, N;
};

template <typename T>
void run_item(void* data, size_t i) {
  const auto& j = *static_cast<const ScanJob<T>*>(data);
  thread_local std::vector<float> yf, state;  // reused across items a pool thread runs
  if constexpr (std::is_same_v<T, float>) {
    muse::bi_scan_item<float>(static_cast<int64_t>(i), *j.fwd, *j.bwd, j.z, j.out, j.L, j.Dm, j.N, yf, state,
                              [](float v) { return v; }, [](float v, float* o) { *o = v; });
  } else {
    muse::bi_scan_item<T>(static_cast<int64_t>(i), *j.fwd, *j.bwd, j.z, j.out, j.L, j.Dm, j.N, yf, state,
                          [](T v) { return v.ToFloat(); }, [](float v, T* o) { *o = T(v); });
  }
}

template <typename T>
Ort::Status BiSelectiveScan(OrtKernelContext* ctx, const Tensor<T>& u_f, const Tensor<T>& delta_f, const Tensor<T>& B_f,
                            const Tensor<T>& C_f, const Tensor<T>& u_b, const Tensor<T>& delta_b,
                            const Tensor<T>& B_b, const Tensor<T>& C_b, const Tensor<T>& z,
                            const Tensor<float>& A_f, const Tensor<float>& A_b, const Tensor<float>& D_f,
                            const Tensor<float>& D_b, const Tensor<float>& bias_f, const Tensor<float>& bias_b,
                            Tensor<T>& y) {
  const auto us = u_f.Shape();
  if (us.size() != 3) return bad("u_f must be (B, L, D), got " + shape_str(us));
  const int64_t Bt = us[0], L = us[1], Dm = us[2];
  struct Named { const char* name; std::vector<int64_t> shape; };
  const std::vector<int64_t> n_shape = A_f.Shape();
  if (n_shape.size() != 2 || n_shape[0] != Dm) return bad("A_f must be (D, N) with D = " + std::to_string(Dm) +
                                                         ", got " + shape_str(n_shape));
  const int64_t N = n_shape[1];
  if (N < 1 || N > 64) return bad("d_state N must be in [1, 64], got " + std::to_string(N));
  const std::vector<int64_t> bld{Bt, L, Dm}, bln{Bt, L, N}, dn{Dm, N}, d1{Dm};
  const Named checks[] = {{"delta_f", delta_f.Shape()}, {"u_b", u_b.Shape()}, {"delta_b", delta_b.Shape()},
                          {"z", z.Shape()}, {"B_f", B_f.Shape()}, {"C_f", C_f.Shape()}, {"B_b", B_b.Shape()},
                          {"C_b", C_b.Shape()}, {"A_b", A_b.Shape()}, {"D_f", D_f.Shape()},
                          {"D_b", D_b.Shape()}, {"delta_bias_f", bias_f.Shape()},
                          {"delta_bias_b", bias_b.Shape()}};
  const std::vector<int64_t>* want[] = {&bld, &bld, &bld, &bld, &bln, &bln, &bln, &bln, &dn, &d1, &d1, &d1, &d1};
  for (size_t i = 0; i < sizeof(checks) / sizeof(checks[0]); ++i)
    if (checks[i].shape != *want[i])
      return bad(std::string(checks[i].name) + " must have shape " + shape_str(*want[i]) + ", got " +
                 shape_str(checks[i].shape));
  T* out = y.Allocate(bld);
  if (Bt * L * Dm == 0) return Ort::Status{nullptr};
  muse::ScanDirection fwd{u_f.Data(), delta_f.Data(), B_f.Data(), C_f.Data(), A_f.Data(), D_f.Data(),
                          bias_f.Data()};
  muse::ScanDirection bwd{u_b.Data(), delta_b.Data(), B_b.Data(), C_b.Data(), A_b.Data(), D_b.Data(),
                          bias_b.Data()};
  ScanJob<T> job{&fwd, &bwd, z.Data(), out, L, Dm, N};
  try {
    // num_batch 0: ONNX Runtime splits the items over the session's intra-op pool as it sees fit.
    Ort::KernelContext(ctx).ParallelFor(run_item<T>, static_cast<size_t>(muse::bi_scan_items(Bt, Dm)), 0, &job);
  } catch (const std::exception& e) {
    return bad(std::string("parallel run failed: ") + e.what());
  }
  return Ort::Status{nullptr};
}

}  // namespace

extern "C" {

// The entry point ONNX Runtime looks up in a custom-op library.
__attribute__((visibility("default"))) OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options,
                                                                                 const OrtApiBase* api) {
  // The C++ wrappers index the OrtApi table of the headers' version (ORT_API_VERSION); an older runtime
  // answers null for it. Report that through the version-1 table every runtime has, never dereference null.
  const OrtApi* ort = api->GetApi(ORT_API_VERSION);
  if (ort == nullptr) {
    const OrtApi* v1 = api->GetApi(1);
    const std::string msg = "libmuse_ort_ops needs ONNX Runtime >= 1." + std::to_string(ORT_API_VERSION) +
                            " (C API version " + std::to_string(ORT_API_VERSION) + "); this runtime is " +
                            api->GetVersionString() + ": upgrade onnxruntime";
    return v1 != nullptr ? v1->CreateStatus(ORT_FAIL, msg.c_str()) : nullptr;
  }
  Ort::InitApi(ort);
  // Static: ONNX Runtime keeps raw pointers to the domain and ops for the process's lifetime.
  static Ort::CustomOpDomain domain{"muse"};
  static std::unique_ptr<Ort::Custom::OrtLiteCustomOp> scan_f32{Ort::Custom::CreateLiteCustomOp(
      "BiSelectiveScan", "CPUExecutionProvider", BiSelectiveScan<float>)};
  static std::unique_ptr<Ort::Custom::OrtLiteCustomOp> scan_f16{Ort::Custom::CreateLiteCustomOp(
      "BiSelectiveScan", "CPUExecutionProvider", BiSelectiveScan<Ort::Float16_t>)};
  // A function-local static's initialiser runs exactly once even when sessions register concurrently.
  static const bool added = [] {
    domain.Add(scan_f32.get());
    domain.Add(scan_f16.get());
    return true;
  }();
  (void)added;
  try {
    Ort::UnownedSessionOptions(options).Add(domain);
  } catch (const std::exception& e) {
    Ort::Status status{e};
    return status.release();
  }
  return nullptr;
}

// For tests: the kernels this library registers, one "domain,op_type,type" per line.
__attribute__((visibility("default"))) const char* MuseOrtOpsKernels() {
  return "muse,BiSelectiveScan,float\nmuse,BiSelectiveScan,float16\n";
}

}  // extern "C"
