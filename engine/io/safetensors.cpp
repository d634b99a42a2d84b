// safetensors parsing (strict) and writing (atomic).
#include "engine/io/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace hmoe::io {

using nlohmann::json;

namespace {

const std::pair<const char*, DType> kDTypes[] = {{"F64", DType::f64}, {"F32", DType::f32}, {"F16", DType::f16},
                                                 {"BF16", DType::bf16}, {"I64", DType::i64}, {"I32", DType::i32},
                                                 {"BOOL", DType::b8}};

DType parse_dtype(const std::string& s, const std::string& name) {
  for (auto& [n, d] : kDTypes)
    if (s == n) return d;
  HMOE_FAIL("safetensors: tensor '", name, "' has unknown or unsupported dtype '", s, "'");
}

const char* dtype_tag(DType d) {
  for (auto& [n, t] : kDTypes)
    if (t == d) return n;
  return "?";
}

uint64_t as_u64(const json& v, const std::string& what) {
  HMOE_CHECK(v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0), "safetensors: ", what,
             " must be a non-negative integer, got ", v.dump());
  return v.get<uint64_t>();
}

}  // namespace

SafeTensors parse_safetensors(const uint8_t* data, size_t size) {
  HMOE_CHECK(size >= 8, "safetensors: file of ", size, " bytes is too short for the 8-byte header length");
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | data[i];
  HMOE_CHECK(hlen <= size - 8, "safetensors: header length ", hlen, " runs past the end of a ", size, "-byte file");
  HMOE_CHECK(hlen <= (100u << 20), "safetensors: header length ", hlen, " exceeds 100 MB");
  json header;
  try {
    header = json::parse(data + 8, data + 8 + hlen);
  } catch (const json::exception& e) {
    HMOE_FAIL("safetensors: the header is not valid JSON: ", e.what());
  }
  HMOE_CHECK(header.is_object(), "safetensors: the header must be a JSON object");
  const uint8_t* body = data + 8 + hlen;
  const uint64_t body_size = size - 8 - hlen;
  SafeTensors out;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      HMOE_CHECK(v.is_object(), "safetensors: __metadata__ must be an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        HMOE_CHECK(m.value().is_string(), "safetensors: metadata '", m.key(), "' is not a string");
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    HMOE_CHECK(v.is_object() && v.contains("dtype") && v.contains("shape") && v.contains("data_offsets"),
               "safetensors: tensor '", name, "' needs dtype, shape and data_offsets");
    HMOE_CHECK(v["dtype"].is_string(), "safetensors: tensor '", name, "' dtype is not a string");
    const DType dt = parse_dtype(v["dtype"].get<std::string>(), name);
    HMOE_CHECK(v["shape"].is_array() && v["shape"].size() <= size_t(kMaxRank), "safetensors: tensor '", name,
               "' shape must be a list of at most ", kMaxRank, " sizes");
    Shape shape;
    uint64_t numel = 1;
    for (const json& d : v["shape"]) {
      const uint64_t n = as_u64(d, "a dimension of '" + name + "'");
      HMOE_CHECK(n < (uint64_t(1) << 40) && (n == 0 || numel <= (uint64_t(1) << 40) / n), "safetensors: tensor '",
                 name, "' is implausibly large");
      numel *= n;
      shape.push_back(int64_t(n));
    }
    const json& off = v["data_offsets"];
    HMOE_CHECK(off.is_array() && off.size() == 2, "safetensors: tensor '", name, "' data_offsets must be [begin, end]");
    const uint64_t b = as_u64(off[0], "data_offsets of '" + name + "'"), e = as_u64(off[1], "data_offsets of '" + name + "'");
    HMOE_CHECK(b <= e && e <= body_size, "safetensors: tensor '", name, "' data_offsets [", b, ", ", e,
               "] are outside the ", body_size, "-byte data section");
    HMOE_CHECK(e - b == numel * dtype_size(dt), "safetensors: tensor '", name, "' has ", e - b, " bytes but shape ",
               shape_str(shape), " of ", dtype_name(dt), " needs ", numel * dtype_size(dt));
    Tensor t = Tensor::empty(shape, {dt});
    if (e > b) std::memcpy(t.data_ptr<void>(), body + b, e - b);
    if (dt == DType::b8) {
      const uint8_t* p = body + b;
      for (uint64_t i = 0; i < numel; ++i)
        HMOE_CHECK(p[i] <= 1, "safetensors: tensor '", name, "' holds a bool byte that is not 0 or 1");
    }
    HMOE_CHECK(!out.tensors.count(name), "safetensors: duplicate tensor '", name, "'");
    out.tensors.emplace(name, t);
    if (e > b) ranges.emplace_back(b, e);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    HMOE_CHECK(ranges[i].first >= ranges[i - 1].second, "safetensors: tensors overlap at byte ", ranges[i].first);
  return out;
}

SafeTensors load_safetensors(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  HMOE_CHECK(f.good(), "safetensors: cannot open '", path, "'");
  std::vector<uint8_t> buf((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  try {
    return parse_safetensors(buf.data(), buf.size());
  } catch (const Error& e) {
    HMOE_FAIL(e.what(), " (in '", path, "')");
  }
}

std::vector<uint8_t> serialize_safetensors(const std::vector<std::pair<std::string, Tensor>>& tensors,
                                           const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<Tensor> host;
  uint64_t off = 0;
  for (const auto& [name, t] : tensors) {
    HMOE_CHECK(name != "__metadata__" && !header.contains(name), "safetensors: duplicate or reserved name '", name, "'");
    Tensor h = t.detach().to(Device::cpu()).contiguous();
    json shape = json::array();
    for (int64_t d : h.shape()) shape.push_back(d);
    header[name] = {{"dtype", dtype_tag(h.dtype())}, {"shape", shape}, {"data_offsets", {off, off + h.nbytes()}}};
    off += h.nbytes();
    host.push_back(h);
  }
  std::string hs = header.dump();
  while ((hs.size() + 8) % 8) hs.push_back(' ');  // keep the data 8-byte aligned
  std::vector<uint8_t> out(8 + hs.size() + off);
  for (int i = 0; i < 8; ++i) out[size_t(i)] = uint8_t(uint64_t(hs.size()) >> (8 * i));
  std::memcpy(out.data() + 8, hs.data(), hs.size());
  size_t pos = 8 + hs.size();
  for (const Tensor& h : host) {
    if (h.nbytes()) std::memcpy(out.data() + pos, h.data_ptr<void>(), h.nbytes());
    pos += h.nbytes();
  }
  return out;
}

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  const std::vector<uint8_t> bytes = serialize_safetensors(tensors, metadata);
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  HMOE_CHECK(fd >= 0, "safetensors: cannot write '", tmp, "': ", std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      std::remove(tmp.c_str());
      HMOE_FAIL("safetensors: writing '", tmp, "' failed: ", std::strerror(err));
    }
    done += size_t(n);
  }
  const bool ok = ::fsync(fd) == 0;
  ::close(fd);
  HMOE_CHECK(ok, "safetensors: fsync of '", tmp, "' failed");
  std::filesystem::rename(tmp, path);
  fsync_directory(std::filesystem::absolute(path).parent_path().string());
}

void fsync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  HMOE_CHECK(fd >= 0, "fsync: cannot open the directory '", dir, "': ", std::strerror(errno));
  const bool ok = ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  HMOE_CHECK(ok, "fsync of the directory '", dir, "' failed: ", std::strerror(err));
}

}  // namespace hmoe::io
