// muse_trt_run: run a TensorRT engine plan built by `muse-tvr build-engine`, from plain C++.
//
//   muse_trt_run --plan head.plan --input tokens=tokens.npy --input mask=mask.npy \
//                [--output-dir out] [--warmup 5] [--iters 20]
//
// Inputs are .npy files (C order; float32 <f4, float16 <f2, int64 <i8) whose dtype must equal the plan's
// input dtype and whose shape must lie inside the plan's optimisation profile. Each output is written as
// <output-dir>/<name>.npy. The timing loop enqueues the plan `iters` times on one stream between two CUDA
// events and prints the mean milliseconds per run (after `warmup` untimed runs).
//
// The plan needs no plugin library: the MUSE scan plugin's kernel is baked into it as AOT PTX.
// NOT built or run on the project's development machines (no TensorRT SDK, no GPU); see docs/tensorrt.md.
#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "npy.h"  // cpp/npy.h, shared with the ONNX Runtime example

namespace {

class Logger : public nvinfer1::ILogger {
 public:
  void log(Severity severity, const char* msg) noexcept override {
    if (severity <= Severity::kWARNING) std::cerr << "[TensorRT] " << msg << "\n";
  }
};

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

struct CudaFree {
  void operator()(void* p) const { cudaFree(p); }
};
using DeviceBuffer = std::unique_ptr<void, CudaFree>;

DeviceBuffer device_alloc(size_t bytes) {
  void* p = nullptr;
  check_cuda(cudaMalloc(&p, bytes == 0 ? 1 : bytes), "cudaMalloc");
  return DeviceBuffer(p);
}

std::string npy_descr(nvinfer1::DataType t, const std::string& name) {
  switch (t) {
    case nvinfer1::DataType::kFLOAT: return "<f4";
    case nvinfer1::DataType::kHALF: return "<f2";
    case nvinfer1::DataType::kINT64: return "<i8";
    default:
      throw std::runtime_error("tensor '" + name + "' has a data type this runner does not handle "
                               "(supported: float32, float16, int64)");
  }
}

std::string dims_str(const nvinfer1::Dims& d) {
  std::ostringstream s;
  s << "(";
  for (int i = 0; i < d.nbDims; ++i) s << (i ? ", " : "") << d.d[i];
  s << ")";
  return s.str();
}

int64_t volume(const nvinfer1::Dims& d) {
  int64_t v = 1;
  for (int i = 0; i < d.nbDims; ++i) v *= d.d[i];
  return v;
}

std::vector<char> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw std::runtime_error("cannot open plan file " + path);
  std::vector<char> data(static_cast<size_t>(f.tellg()));
  f.seekg(0);
  if (!f.read(data.data(), static_cast<std::streamsize>(data.size())))
    throw std::runtime_error("cannot read plan file " + path);
  return data;
}

struct Args {
  std::string plan, out_dir = ".";
  std::map<std::string, std::string> inputs;
  int warmup = 5, iters = 20;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error("missing value after " + k);
      return argv[++i];
    };
    if (k == "--plan") {
      a.plan = value();
    } else if (k == "--input") {
      const std::string v = value();
      const auto eq = v.find('=');
      if (eq == std::string::npos) throw std::runtime_error("--input needs name=file.npy, got " + v);
      a.inputs[v.substr(0, eq)] = v.substr(eq + 1);
    } else if (k == "--output-dir") {
      a.out_dir = value();
    } else if (k == "--warmup") {
      a.warmup = std::stoi(value());
    } else if (k == "--iters") {
      a.iters = std::stoi(value());
    } else {
      throw std::runtime_error("unknown argument " + k +
                               " (usage: --plan P --input name=file.npy ... [--output-dir D] [--warmup N] [--iters N])");
    }
  }
  if (a.plan.empty()) throw std::runtime_error("--plan is required");
  if (a.iters < 1 || a.warmup < 0) throw std::runtime_error("--iters must be >= 1 and --warmup >= 0");
  return a;
}

int run(const Args& args) {
  Logger logger;
  std::unique_ptr<nvinfer1::IRuntime> runtime(nvinfer1::createInferRuntime(logger));
  if (!runtime) throw std::runtime_error("createInferRuntime failed");
  const std::vector<char> plan = read_file(args.plan);
  std::unique_ptr<nvinfer1::ICudaEngine> engine(runtime->deserializeCudaEngine(plan.data(), plan.size()));
  if (!engine)
    throw std::runtime_error("could not deserialise " + args.plan +
                             " (plans only load with the TensorRT version and GPU architecture that built them)");
  std::unique_ptr<nvinfer1::IExecutionContext> ctx(engine->createExecutionContext());
  if (!ctx) throw std::runtime_error("createExecutionContext failed");

  std::vector<DeviceBuffer> buffers;
  std::vector<std::pair<std::string, nvinfer1::DataType>> outputs;
  const int n = engine->getNbIOTensors();
  for (int i = 0; i < n; ++i) {
    const char* name = engine->getIOTensorName(i);
    const nvinfer1::DataType type = engine->getTensorDataType(name);
    if (engine->getTensorIOMode(name) != nvinfer1::TensorIOMode::kINPUT) {
      outputs.emplace_back(name, type);
      continue;
    }
    const auto it = args.inputs.find(name);
    if (it == args.inputs.end()) throw std::runtime_error(std::string("missing --input ") + name + "=file.npy");
    const npy::Array a = npy::load(it->second);
    const std::string want = npy_descr(type, name);
    if (a.descr != want)
      throw std::runtime_error(std::string("input '") + name + "' must be " + want + ", " + it->second + " is " + a.descr);
    nvinfer1::Dims d{};
    d.nbDims = static_cast<int32_t>(a.shape.size());
    if (d.nbDims != engine->getTensorShape(name).nbDims)
      throw std::runtime_error(std::string("input '") + name + "' must have rank " +
                               std::to_string(engine->getTensorShape(name).nbDims) + ", got " + std::to_string(d.nbDims));
    for (int k = 0; k < d.nbDims; ++k) d.d[k] = a.shape[k];
    const nvinfer1::Dims lo = engine->getProfileShape(name, 0, nvinfer1::OptProfileSelector::kMIN);
    const nvinfer1::Dims hi = engine->getProfileShape(name, 0, nvinfer1::OptProfileSelector::kMAX);
    for (int k = 0; k < d.nbDims; ++k)
      if (d.d[k] < lo.d[k] || d.d[k] > hi.d[k])
        throw std::runtime_error(std::string("input '") + name + "' shape " + dims_str(d) +
                                 " is outside the plan's profile " + dims_str(lo) + " .. " + dims_str(hi));
    if (!ctx->setInputShape(name, d)) throw std::runtime_error(std::string("setInputShape failed for ") + name);
    buffers.push_back(device_alloc(a.data.size()));
    check_cuda(cudaMemcpy(buffers.back().get(), a.data.data(), a.data.size(), cudaMemcpyHostToDevice), "copy input");
    ctx->setTensorAddress(name, buffers.back().get());
  }
  for (const auto& name : args.inputs)
    if (engine->getTensorIOMode(name.first.c_str()) != nvinfer1::TensorIOMode::kINPUT)
      throw std::runtime_error("the plan has no input named '" + name.first + "'");

  std::vector<std::pair<nvinfer1::Dims, size_t>> out_shapes;
  for (const auto& [name, type] : outputs) {
    const nvinfer1::Dims d = ctx->getTensorShape(name.c_str());
    const size_t bytes = static_cast<size_t>(volume(d)) * npy::item_size(npy_descr(type, name));
    buffers.push_back(device_alloc(bytes));
    ctx->setTensorAddress(name.c_str(), buffers.back().get());
    out_shapes.emplace_back(d, bytes);
  }

  cudaStream_t stream;
  check_cuda(cudaStreamCreate(&stream), "cudaStreamCreate");
  for (int i = 0; i < args.warmup; ++i)
    if (!ctx->enqueueV3(stream)) throw std::runtime_error("enqueueV3 failed");
  cudaEvent_t start, stop;
  check_cuda(cudaEventCreate(&start), "cudaEventCreate");
  check_cuda(cudaEventCreate(&stop), "cudaEventCreate");
  check_cuda(cudaEventRecord(start, stream), "cudaEventRecord");
  for (int i = 0; i < args.iters; ++i)
    if (!ctx->enqueueV3(stream)) throw std::runtime_error("enqueueV3 failed");
  check_cuda(cudaEventRecord(stop, stream), "cudaEventRecord");
  check_cuda(cudaEventSynchronize(stop), "cudaEventSynchronize");
  float ms = 0.f;
  check_cuda(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
  std::printf("%s: %.3f ms per run (mean of %d, %d warm-up)\n", args.plan.c_str(), ms / args.iters, args.iters,
              args.warmup);

  const size_t first_out = buffers.size() - outputs.size();
  for (size_t i = 0; i < outputs.size(); ++i) {
    const auto& [name, type] = outputs[i];
    std::vector<char> host(out_shapes[i].second);
    check_cuda(cudaMemcpy(host.data(), buffers[first_out + i].get(), host.size(), cudaMemcpyDeviceToHost), "copy output");
    const nvinfer1::Dims& d = out_shapes[i].first;
    const std::vector<int64_t> shape(d.d, d.d + d.nbDims);
    const std::string path = args.out_dir + "/" + name + ".npy";
    npy::save(path, npy_descr(type, name), shape, host.data());
    std::printf("wrote %s %s\n", path.c_str(), dims_str(d).c_str());
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaStreamDestroy(stream);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const std::exception& e) {
    std::cerr << "muse_trt_run: " << e.what() << "\n";
    return 1;
  }
}
