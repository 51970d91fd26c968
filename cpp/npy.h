// Minimal reader/writer for NumPy .npy files (format version 1.0-3.0, C order, little-endian), enough for
// the example program's inputs and outputs. Dtypes: <f4 (float32), <f2 (float16), <i8 (int64).
#pragma once

#include <cstdint>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace npy {

struct Array {
  std::string descr;            // "<f4", "<f2" or "<i8"
  std::vector<int64_t> shape;
  std::vector<char> data;       // raw little-endian bytes, C order
};

inline size_t item_size(const std::string& d) {
  if (d == "<f4") return 4;
  if (d == "<f2") return 2;
  if (d == "<i8") return 8;
  throw std::runtime_error("unsupported dtype '" + d + "' (supported: float32 <f4, float16 <f2, int64 <i8)");
}

inline std::string header_value(const std::string& h, const std::string& key, const std::string& path) {
  const auto k = h.find("'" + key + "'");
  if (k == std::string::npos) throw std::runtime_error(path + ": .npy header has no '" + key + "'");
  auto p = h.find(':', k) + 1;
  while (p < h.size() && h[p] == ' ') ++p;
  if (h[p] == '(') return h.substr(p + 1, h.find(')', p) - p - 1);
  if (h[p] == '\'') return h.substr(p + 1, h.find('\'', p + 1) - p - 1);
  return h.substr(p, h.find_first_of(",}", p) - p);
}

inline Array load(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open input file " + path);
  char magic[8];
  if (!f.read(magic, 8) || std::string(magic, 6) != "\x93NUMPY")
    throw std::runtime_error(path + " is not a .npy file (bad magic; save it with numpy.save)");
  uint32_t hlen = 0;
  if (magic[6] == 1) {
    uint16_t h16 = 0;
    f.read(reinterpret_cast<char*>(&h16), 2);
    hlen = h16;
  } else {
    f.read(reinterpret_cast<char*>(&hlen), 4);
  }
  std::string header(hlen, '\0');
  if (!f.read(header.data(), hlen)) throw std::runtime_error(path + ": truncated .npy header");
  Array a;
  a.descr = header_value(header, "descr", path);
  if (header_value(header, "fortran_order", path).find("True") != std::string::npos)
    throw std::runtime_error(path + ": Fortran-ordered arrays are not supported (use numpy.ascontiguousarray)");
  const std::string dims = header_value(header, "shape", path);
  size_t pos = 0;
  int64_t count = 1;
  while (pos < dims.size()) {
    const size_t next = dims.find(',', pos);
    const std::string tok = dims.substr(pos, next == std::string::npos ? std::string::npos : next - pos);
    if (tok.find_first_not_of(' ') != std::string::npos) {
      a.shape.push_back(std::stoll(tok));
      count *= a.shape.back();
    }
    if (next == std::string::npos) break;
    pos = next + 1;
  }
  const size_t bytes = static_cast<size_t>(count) * item_size(a.descr);
  a.data.resize(bytes);
  if (!f.read(a.data.data(), static_cast<std::streamsize>(bytes)))
    throw std::runtime_error(path + ": file is shorter than its header says (" + std::to_string(bytes) +
                             " data bytes expected)");
  return a;
}

inline void save(const std::string& path, const std::string& descr, const std::vector<int64_t>& shape,
                 const void* data) {
  std::string dims;
  int64_t count = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    dims += std::to_string(shape[i]) + (shape.size() == 1 || i + 1 < shape.size() ? "," : "");
    count *= shape[i];
  }
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot write " + path);
  const uint16_t hlen = static_cast<uint16_t>(header.size());
  f.write("\x93NUMPY\x01\x00", 8);
  f.write(reinterpret_cast<const char*>(&hlen), 2);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(count * item_size(descr)));
}

}  // namespace npy
