// Minimal reader/writer for NumPy .npy files (format version 1.0-3.0, C order, little-endian), enough for
// the example program's inputs and outputs. Dtypes: <f4 (float32), <f2 (float16), <i8 (int64).
#pragma once

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sys/stat.h>
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
  f.seekg(0, std::ios::end);
  const int64_t file_size = static_cast<int64_t>(f.tellg());
  f.seekg(8);
  uint32_t hlen = 0;
  if (magic[6] == 1) {
    uint16_t h16 = 0;
    f.read(reinterpret_cast<char*>(&h16), 2);
    hlen = h16;
  } else {
    f.read(reinterpret_cast<char*>(&hlen), 4);
  }
  if (!f || hlen > file_size) throw std::runtime_error(path + ": truncated .npy header");
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
      int64_t d = -1;
      try {
        d = std::stoll(tok);
      } catch (const std::exception&) {
      }
      // Sizes are checked before anything is allocated: a forged header must not cost memory.
      if (d < 0 || (d > 0 && count > std::numeric_limits<int64_t>::max() / 8 / d))
        throw std::runtime_error(path + ": bad .npy shape (" + dims + ")");
      a.shape.push_back(d);
      count *= d;
    }
    if (next == std::string::npos) break;
    pos = next + 1;
  }
  const size_t bytes = static_cast<size_t>(count) * item_size(a.descr);
  const int64_t left = file_size - static_cast<int64_t>(f.tellg());
  if (static_cast<int64_t>(bytes) != left)
    throw std::runtime_error(path + ": the header's shape (" + dims + ") needs " + std::to_string(bytes) +
                             " data bytes, the file has " + std::to_string(left));
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
  // Written to a temporary name beside `path` and renamed only once every byte is on disk, so a failed
  // write (full disk, I/O error) never leaves a partial file under the requested name.
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
    throw std::runtime_error("cannot write " + path + ": it exists and is not a regular file");
  const std::string tmp = path + ".tmp-muse_encode";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw std::runtime_error("cannot write " + path + " (cannot create " + tmp + ")");
    const uint16_t hlen = static_cast<uint16_t>(header.size());
    f.write("\x93NUMPY\x01\x00", 8);
    f.write(reinterpret_cast<const char*>(&hlen), 2);
    f.write(header.data(), static_cast<std::streamsize>(header.size()));
    f.write(static_cast<const char*>(data), static_cast<std::streamsize>(count * item_size(descr)));
    f.flush();
    f.close();
    if (f.fail()) {
      std::remove(tmp.c_str());
      throw std::runtime_error("writing " + path + " failed (disk full or I/O error); nothing was written");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw std::runtime_error("cannot write " + path + " (rename from " + tmp + " failed)");
  }
}

}  // namespace npy
