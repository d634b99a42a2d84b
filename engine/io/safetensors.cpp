// safetensors parsing (strict, digests checked) and writing (atomic, digests recorded).
#include "engine/io/safetensors.h"

#include <xxhash.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "engine/io/file.h"
#include "engine/io/json.h"

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
             " must be a non-negative integer, got ", json_brief(v));
  return v.get<uint64_t>();
}

std::string hex16(uint64_t h) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

// XXH3-64 of a tensor as the file stores it: dtype tag, shape, then the bytes.
std::string tensor_digest(DType dt, const Shape& shape, const void* bytes, size_t n) {
  XXH3_state_t* st = XXH3_createState();
  HMOE_CHECK(st != nullptr, "safetensors: out of memory for a digest");
  XXH3_64bits_reset(st);
  const std::string tag = dtype_tag(dt);
  XXH3_64bits_update(st, tag.data(), tag.size());
  for (int64_t d : shape) XXH3_64bits_update(st, &d, sizeof d);
  if (n) XXH3_64bits_update(st, bytes, n);
  const uint64_t h = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  return hex16(h);
}

// XXH3-64 of a string map in key order (NUL-separated, so no two maps hash alike by
// shifting a boundary).
std::string map_digest(const std::map<std::string, std::string>& m) {
  std::string all;
  for (const auto& [k, v] : m) all.append(k).append(1, '\0').append(v).append(1, '\0');
  return hex16(XXH3_64bits(all.data(), all.size()));
}

const std::string kMetadataDigestKey = std::string(kDigestPrefix) + "__metadata__";

bool is_digest_key(const std::string& k) { return k.rfind(kDigestPrefix, 0) == 0; }

// Moves the digest entries out of `metadata`: the recorded digests by name (a tensor's,
// or "__metadata__").
std::map<std::string, std::string> take_digests(std::map<std::string, std::string>& metadata) {
  std::map<std::string, std::string> recorded;
  for (auto it = metadata.begin(); it != metadata.end();) {
    if (is_digest_key(it->first)) {
      recorded.emplace(it->first.substr(std::strlen(kDigestPrefix)), it->second);
      it = metadata.erase(it);
    } else {
      ++it;
    }
  }
  return recorded;
}

// Checks the metadata (digests taken out) against its recorded digest, when the file
// records digests at all (files of other tools do not).
void verify_metadata_digest(const std::map<std::string, std::string>& metadata,
                            const std::map<std::string, std::string>& recorded) {
  if (recorded.empty()) return;
  const auto want = recorded.find("__metadata__");
  HMOE_CHECK(want != recorded.end(), "safetensors: the metadata has no recorded digest, while the tensors do");
  HMOE_CHECK(map_digest(metadata) == want->second, "safetensors: the metadata is damaged (its digest is ",
             map_digest(metadata), ", the file recorded ", json_brief(json(want->second)), ")");
}

// Moves the digest entries out of `metadata` and checks each against what was read.
void verify_digests(SafeTensors& out, const std::map<std::string, std::string>& tensor_digests) {
  const std::map<std::string, std::string> recorded = take_digests(out.metadata);
  if (recorded.empty()) return;  // written by another tool
  for (const auto& [name, want] : recorded) {
    if (name == "__metadata__") continue;
    const auto got = tensor_digests.find(name);
    HMOE_CHECK(got != tensor_digests.end(), "safetensors: a digest is recorded for '", json_brief(json(name)),
               "', which the file does not hold");
    HMOE_CHECK(got->second == want, "safetensors: tensor '", name, "' is damaged (its digest is ", got->second,
               ", the file recorded ", json_brief(json(want)), ")");
  }
  for (const auto& [name, d] : tensor_digests)
    HMOE_CHECK(recorded.count(name), "safetensors: tensor '", name, "' has no recorded digest, while others do");
  verify_metadata_digest(out.metadata, recorded);
}

std::string combined_digest(const std::map<std::string, std::string>& tensor_digests) {
  return map_digest(tensor_digests);
}

// The header's JSON object and its length (the data begin at 8 + the length).
std::pair<json, uint64_t> parse_header(const uint8_t* data, size_t size) {
  HMOE_CHECK(size >= 8, "safetensors: file of ", size, " bytes is too short for the 8-byte header length");
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | data[i];
  HMOE_CHECK(hlen <= size - 8, "safetensors: header length ", hlen, " runs past the end of a ", size, "-byte file");
  HMOE_CHECK(hlen <= (100u << 20), "safetensors: header length ", hlen, " exceeds 100 MB");
  json header =
      parse_json(std::string_view(reinterpret_cast<const char*>(data) + 8, size_t(hlen)), "safetensors: the header");
  HMOE_CHECK(header.is_object(), "safetensors: the header must be a JSON object");
  return {std::move(header), hlen};
}

// The "__metadata__" string map of a header (digest entries included), empty if none.
std::map<std::string, std::string> header_metadata(const json& header) {
  std::map<std::string, std::string> out;
  const auto it = header.find("__metadata__");
  if (it == header.end()) return out;
  HMOE_CHECK(it->is_object(), "safetensors: __metadata__ must be an object of strings");
  for (auto m = it->begin(); m != it->end(); ++m) {
    HMOE_CHECK(m.value().is_string(), "safetensors: metadata '", json_brief(json(m.key())), "' is not a string");
    out[m.key()] = m.value().get<std::string>();
  }
  return out;
}

}  // namespace

std::map<std::string, std::string> parse_safetensors_metadata(const uint8_t* data, size_t size) {
  std::map<std::string, std::string> metadata = header_metadata(parse_header(data, size).first);
  verify_metadata_digest(metadata, take_digests(metadata));
  return metadata;
}

SafeTensors parse_safetensors(const uint8_t* data, size_t size) {
  const auto [header, hlen] = parse_header(data, size);
  const uint8_t* body = data + 8 + hlen;
  const uint64_t body_size = size - 8 - hlen;
  SafeTensors out;
  out.metadata = header_metadata(header);
  std::map<std::string, std::string> digests;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") continue;
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
    digests.emplace(name, tensor_digest(dt, shape, body + b, size_t(e - b)));
    out.tensors.emplace(name, t);
    if (e > b) ranges.emplace_back(b, e);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    HMOE_CHECK(ranges[i].first >= ranges[i - 1].second, "safetensors: tensors overlap at byte ", ranges[i].first);
  verify_digests(out, digests);
  out.digest = combined_digest(digests);
  return out;
}

SafeTensors load_safetensors(const std::string& path) {
  const std::vector<uint8_t> buf = read_file(path, "safetensors");
  try {
    return parse_safetensors(buf.data(), buf.size());
  } catch (const Error& e) {
    HMOE_FAIL(e.what(), " (in '", path, "')");
  }
}

std::vector<uint8_t> serialize_safetensors(const std::vector<std::pair<std::string, Tensor>>& tensors,
                                           const std::map<std::string, std::string>& metadata) {
  for (const auto& [k, v] : metadata)
    HMOE_CHECK(!is_digest_key(k), "safetensors: the metadata key '", k, "' uses the reserved prefix ", kDigestPrefix);
  std::map<std::string, std::string> meta = metadata;
  meta[kMetadataDigestKey] = map_digest(metadata);
  json header = json::object();
  std::vector<Tensor> host;
  uint64_t off = 0;
  for (const auto& [name, t] : tensors) {
    HMOE_CHECK(name != "__metadata__" && !header.contains(name), "safetensors: duplicate or reserved name '", name, "'");
    Tensor h = t.detach().to(Device::cpu()).contiguous();
    meta[kDigestPrefix + name] = tensor_digest(h.dtype(), h.shape(), h.data_ptr<void>(), h.nbytes());
    json shape = json::array();
    for (int64_t d : h.shape()) shape.push_back(d);
    header[name] = {{"dtype", dtype_tag(h.dtype())}, {"shape", shape}, {"data_offsets", {off, off + h.nbytes()}}};
    off += h.nbytes();
    host.push_back(h);
  }
  header["__metadata__"] = meta;
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
  write_file_atomic(path, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), "safetensors");
}

std::string safetensors_digest(const std::vector<std::pair<std::string, Tensor>>& tensors) {
  std::map<std::string, std::string> digests;
  for (const auto& [name, t] : tensors) {
    const Tensor h = t.detach().to(Device::cpu()).contiguous();
    digests[name] = tensor_digest(h.dtype(), h.shape(), h.data_ptr<void>(), h.nbytes());
  }
  return combined_digest(digests);
}

}  // namespace hmoe::io
