/// @file
/// safetensors read and write: an 8-byte little-endian header length, a JSON header
/// (dtype, shape, data_offsets per tensor; optional "__metadata__" string map), then
/// the data. Loading validates strictly and never reads outside the buffer. Files we write
/// carry a digest of every tensor and of the metadata, checked on load; files from other
/// tools (no digests) load as before.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace hmoe::io {

/// A parsed safetensors file.
struct SafeTensors {
  std::map<std::string, Tensor> tensors;        ///< cpu, contiguous
  std::map<std::string, std::string> metadata;  ///< the writer's own entries (digests removed)
  std::string digest;                           ///< safetensors_digest of the tensors
};

/// Metadata keys starting with this prefix hold the digests (XXH3-64, 16 hex digits) of
/// the tensor named after it, or of the metadata ("xxh3_64:__metadata__"); reserved.
inline constexpr const char* kDigestPrefix = "xxh3_64:";

/// One digest of a set of tensors (names, dtypes, shapes and bytes; independent of their
/// order): what SafeTensors::digest of a file holding them reads. Ties files together (a
/// training state records the digest of the weights it belongs with).
std::string safetensors_digest(const std::vector<std::pair<std::string, Tensor>>& tensors);

/// Parses a whole file image; throws hmoe::Error naming what is malformed, or the tensor
/// whose bytes do not match its recorded digest.
SafeTensors parse_safetensors(const uint8_t* data, size_t size);
/// Only the header's metadata (digests removed, its own digest checked), allocating no
/// tensor: what a reader needs to learn, say, the size of the model a file claims to hold.
std::map<std::string, std::string> parse_safetensors_metadata(const uint8_t* data, size_t size);
/// Reads and parses the file at path (see parse_safetensors).
SafeTensors load_safetensors(const std::string& path);
/// The file image of these tensors (any device or layout; copied as needed).
std::vector<uint8_t> serialize_safetensors(const std::vector<std::pair<std::string, Tensor>>& tensors,
                                           const std::map<std::string, std::string>& metadata = {});
/// Writes atomically and durably (io::write_file_atomic).
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace hmoe::io
