// muse_encode: run an exported muse-tvr model (video encoder, head or text encoder) with ONNX Runtime from
// C++, with the muse custom-op library, and write the embedding.
//
//   muse_encode MODEL.onnx --ops libmuse_ort_ops.so --input NAME=FILE.npy [--input ...] --out EMB.npy
//               [--threads N]
//
// Inputs are NumPy .npy files (numpy.save; C order; float32 <f4, float16 <f2, int64 <i8). For the video
// encoder: frames (B, T, 3, S, S) CLIP-normalised pixels and mask (B, T) float32 of 0/1. The output is
// the model's single output, embedding (B, C) float32, written as .npy.
// Every input is checked against the model (name, dtype, rank, fixed dimensions) before running; errors
// name the input and what was expected. Exit codes: 0 ok, 2 bad arguments or input, 1 runtime failure.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "npy.h"
#include "onnxruntime_cxx_api.h"

namespace {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

const char* kUsage =
    "usage: muse_encode MODEL.onnx --ops LIB.so --input NAME=FILE.npy [--input NAME=FILE.npy ...] "
    "--out OUT.npy [--threads N]\n";

std::string descr_of(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "<f4";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "<f2";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "<i8";
    default: return "unsupported element type " + std::to_string(static_cast<int>(t));
  }
}

std::string dtype_name(const std::string& d) {
  return d == "<f4" ? "float32" : d == "<f2" ? "float16" : d == "<i8" ? "int64" : d;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + (s[i] < 0 ? std::string("?") : std::to_string(s[i]));
  return out + (s.size() == 1 ? ",)" : ")");
}

}  // namespace

int main(int argc, char** argv) {
  std::string model, ops, out;
  std::map<std::string, std::string> input_files;
  int threads = 0;
  try {
    if (argc < 2) throw UsageError("missing MODEL.onnx");
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto next = [&]() -> std::string {
        if (i + 1 >= argc) throw UsageError(a + " needs a value");
        return argv[++i];
      };
      if (a == "--ops") ops = next();
      else if (a == "--out") out = next();
      else if (a == "--threads") threads = std::stoi(next());
      else if (a == "--input") {
        const std::string kv = next();
        const auto eq = kv.find('=');
        if (eq == std::string::npos || eq == 0) throw UsageError("--input wants NAME=FILE.npy, got '" + kv + "'");
        input_files[kv.substr(0, eq)] = kv.substr(eq + 1);
      } else if (a == "-h" || a == "--help") {
        std::cout << kUsage;
        return 0;
      } else if (!a.empty() && a[0] == '-') throw UsageError("unknown option " + a);
      else if (model.empty()) model = a;
      else throw UsageError("unexpected argument " + a);
    }
    if (model.empty()) throw UsageError("missing MODEL.onnx");
    if (out.empty()) throw UsageError("missing --out OUT.npy");
  } catch (const std::exception& e) {
    std::cerr << "muse_encode: error: " << e.what() << "\n" << kUsage;
    return 2;
  }

  try {
    Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "muse_encode");
    Ort::SessionOptions so;
    if (threads > 0) so.SetIntraOpNumThreads(threads);
    if (!ops.empty()) so.RegisterCustomOpsLibrary(ops.c_str());
    Ort::Session session(env, model.c_str(), so);
    Ort::AllocatorWithDefaultOptions alloc;

    std::vector<std::string> names;
    std::vector<npy::Array> arrays;
    std::vector<Ort::Value> values;
    auto mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    const size_t n_in = session.GetInputCount();
    std::string expected;
    for (size_t i = 0; i < n_in; ++i) expected += std::string(i ? ", " : "") + session.GetInputNameAllocated(i, alloc).get();
    for (const auto& kv : input_files) {
      bool known = false;
      for (size_t i = 0; i < n_in; ++i) known |= kv.first == session.GetInputNameAllocated(i, alloc).get();
      if (!known) throw UsageError("the model has no input '" + kv.first + "'; its inputs are: " + expected);
    }
    arrays.reserve(n_in);
    for (size_t i = 0; i < n_in; ++i) {
      const std::string name = session.GetInputNameAllocated(i, alloc).get();
      const Ort::TypeInfo type_info = session.GetInputTypeInfo(i);  // owns what `info` views
      const auto info = type_info.GetTensorTypeAndShapeInfo();
      const std::string want = descr_of(info.GetElementType());
      const std::vector<int64_t> dims = info.GetShape();
      auto it = input_files.find(name);
      if (it == input_files.end())
        throw UsageError("missing input '" + name + "' (" + dtype_name(want) + " " + shape_str(dims) +
                         "); pass --input " + name + "=FILE.npy");
      npy::Array a;
      try {
        a = npy::load(it->second);
      } catch (const std::exception& e) {
        throw UsageError(std::string("input '") + name + "': " + e.what());
      }
      if (a.descr != want)
        throw UsageError("input '" + name + "' must be " + dtype_name(want) + ", but " + it->second + " holds " +
                         dtype_name(a.descr));
      bool ok = a.shape.size() == dims.size();
      for (size_t d = 0; ok && d < dims.size(); ++d) ok = dims[d] < 0 || dims[d] == a.shape[d];
      if (!ok)
        throw UsageError("input '" + name + "' must have shape " + shape_str(dims) + " (? = any size), but " +
                         it->second + " has shape " + shape_str(a.shape));
      for (size_t d = 0; d < a.shape.size(); ++d)
        if (a.shape[d] == 0)
          throw UsageError("input '" + name + "' (" + it->second + ") is empty (shape " + shape_str(a.shape) +
                           "): give at least one item");
      arrays.push_back(std::move(a));
      npy::Array& ref = arrays.back();
      ONNXTensorElementDataType type = info.GetElementType();
      values.push_back(Ort::Value::CreateTensor(mem, ref.data.data(), ref.data.size(), ref.shape.data(),
                                                ref.shape.size(), type));
      names.push_back(name);
    }
    // The engine's mask contract: (B, T) like the frames/tokens, every value 0 or 1 (NaN included in "not").
    for (size_t i = 0; i < names.size(); ++i) {
      if (names[i] != "mask" || arrays[i].descr != "<f4") continue;
      for (size_t j = 0; j < names.size(); ++j) {
        if (names[j] != "frames" && names[j] != "tokens") continue;
        const auto& m = arrays[i].shape;
        const auto& x = arrays[j].shape;
        if (m.size() != 2 || x.size() < 2 || m[0] != x[0] || m[1] != x[1])
          throw UsageError("mask shape " + shape_str(m) + " must be (B, T) of " + names[j] + " " + shape_str(x));
      }
      const float* v = reinterpret_cast<const float*>(arrays[i].data.data());
      for (size_t k = 0; k < arrays[i].data.size() / sizeof(float); ++k)
        if (!(v[k] == 0.0f || v[k] == 1.0f))
          throw UsageError("mask values must be 0 or 1 (1 for real frames), found " + std::to_string(v[k]));
    }
    std::vector<const char*> in_names;
    for (auto& n : names) in_names.push_back(n.c_str());
    const std::string out_name = session.GetOutputNameAllocated(0, alloc).get();
    const char* out_names[] = {out_name.c_str()};
    const auto t0 = std::chrono::steady_clock::now();
    auto outputs = session.Run(Ort::RunOptions{nullptr}, in_names.data(), values.data(), values.size(),
                               out_names, 1);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    auto oinfo = outputs[0].GetTensorTypeAndShapeInfo();
    const std::string descr = descr_of(oinfo.GetElementType());
    npy::save(out, descr, oinfo.GetShape(), outputs[0].GetTensorRawData());
    std::cerr << "muse_encode: wrote " << out_name << " " << shape_str(oinfo.GetShape()) << " "
              << dtype_name(descr) << " to " << out << " (run " << ms << " ms)\n";
    return 0;
  } catch (const UsageError& e) {
    std::cerr << "muse_encode: error: " << e.what() << "\n";
    return 2;
  } catch (const Ort::Exception& e) {
    std::cerr << "muse_encode: onnxruntime error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "muse_encode: error: " << e.what() << "\n";
    return 1;
  }
}
