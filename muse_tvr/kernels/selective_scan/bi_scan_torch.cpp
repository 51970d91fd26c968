// PyTorch CPU binding of the bidirectional selective scan in bi_scan.h (the same kernel the ORT op library
// runs). Built on first use by cpp_scan.py with torch.utils.cpp_extension; float32 only, the Python side
// converts other dtypes and strided views before the call.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <string>
#include <vector>

#include "bi_scan.h"

namespace {

void check_tensor(const at::Tensor& t, const char* name, at::IntArrayRef shape) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat, name, " must be float32, got ", t.scalar_type());
  TORCH_CHECK(t.sizes() == shape, name, " must have shape ", shape, ", got ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

at::Tensor bi_scan(const at::Tensor& u_f, const at::Tensor& delta_f, const at::Tensor& B_f, const at::Tensor& C_f,
                   const at::Tensor& u_b, const at::Tensor& delta_b, const at::Tensor& B_b, const at::Tensor& C_b,
                   const at::Tensor& z, const at::Tensor& A_f, const at::Tensor& A_b, const at::Tensor& D_f,
                   const at::Tensor& D_b, const at::Tensor& delta_bias_f, const at::Tensor& delta_bias_b) {
  TORCH_CHECK(u_f.dim() == 3, "u_f must be (B, L, D), got ", u_f.sizes());
  const int64_t Bt = u_f.size(0), L = u_f.size(1), Dm = u_f.size(2);
  TORCH_CHECK(A_f.dim() == 2 && A_f.size(0) == Dm, "A_f must be (D, N) with D = ", Dm, ", got ", A_f.sizes());
  const int64_t N = A_f.size(1);
  // The kernel keeps A transposed for one item in a fixed [64][16] stack array.
  TORCH_CHECK(N >= 1 && N <= 64, "d_state N must be in [1, 64], got ", N);
  const std::vector<int64_t> bld{Bt, L, Dm}, bln{Bt, L, N}, dn{Dm, N}, d1{Dm};
  check_tensor(u_f, "u_f", bld);
  check_tensor(delta_f, "delta_f", bld);
  check_tensor(B_f, "B_f", bln);
  check_tensor(C_f, "C_f", bln);
  check_tensor(u_b, "u_b", bld);
  check_tensor(delta_b, "delta_b", bld);
  check_tensor(B_b, "B_b", bln);
  check_tensor(C_b, "C_b", bln);
  check_tensor(z, "z", bld);
  check_tensor(A_f, "A_f", dn);
  check_tensor(A_b, "A_b", dn);
  check_tensor(D_f, "D_f", d1);
  check_tensor(D_b, "D_b", d1);
  check_tensor(delta_bias_f, "delta_bias_f", d1);
  check_tensor(delta_bias_b, "delta_bias_b", d1);

  at::Tensor out = at::empty({Bt, L, Dm}, u_f.options());
  if (out.numel() == 0) return out;
  const muse::ScanDirection fwd{u_f.data_ptr<float>(), delta_f.data_ptr<float>(), B_f.data_ptr<float>(),
                                C_f.data_ptr<float>(),  A_f.data_ptr<float>(),     D_f.data_ptr<float>(),
                                delta_bias_f.data_ptr<float>()};
  const muse::ScanDirection bwd{u_b.data_ptr<float>(), delta_b.data_ptr<float>(), B_b.data_ptr<float>(),
                                C_b.data_ptr<float>(),  A_b.data_ptr<float>(),     D_b.data_ptr<float>(),
                                delta_bias_b.data_ptr<float>()};
  const float* zp = z.data_ptr<float>();
  float* op = out.data_ptr<float>();
  // Every item costs the same (L steps of N x 16 channels), so a grain of one item balances the pool.
  at::parallel_for(0, muse::bi_scan_items(Bt, Dm), 1, [&](int64_t begin, int64_t end) {
    std::vector<float> yf, state;  // per chunk: chunks run concurrently on the intra-op pool
    for (int64_t i = begin; i < end; ++i)
      muse::bi_scan_item<float>(i, fwd, bwd, zp, op, L, Dm, N, yf, state, [](float v) { return v; },
                                [](float v, float* o) { *o = v; });
  });
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Bidirectional selective scan on CPU (float32, token-major (B, L, D) layout)";
  // No GIL needed: the kernel touches only tensor memory, so other Python threads keep running.
  m.def("bi_scan", &bi_scan, "silu(z) * (forward scan + backward scan); see cpp_scan.py",
        py::arg("u_f"), py::arg("delta_f"), py::arg("B_f"), py::arg("C_f"), py::arg("u_b"), py::arg("delta_b"),
        py::arg("B_b"), py::arg("C_b"), py::arg("z"), py::arg("A_f"), py::arg("A_b"), py::arg("D_f"),
        py::arg("D_b"), py::arg("delta_bias_f"), py::arg("delta_bias_b"),
        py::call_guard<py::gil_scoped_release>());
}
