// safetensors read and write: an 8-byte little-endian header length, a JSON header
// (dtype, shape, data_offsets per tensor; optional "__metadata__" string map), then
// the data. Loading validates strictly and never reads outside the buffer.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace hmoe::io {

struct SafeTensors {
  std::map<std::string, Tensor> tensors;  // cpu, contiguous
  std::map<std::string, std::string> metadata;
};

// Parses a whole file image; throws hmoe::Error naming what is malformed.
SafeTensors parse_safetensors(const uint8_t* data, size_t size);
SafeTensors load_safetensors(const std::string& path);
// The file image of these tensors (any device or layout; copied as needed).
std::vector<uint8_t> serialize_safetensors(const std::vector<std::pair<std::string, Tensor>>& tensors,
                                           const std::map<std::string, std::string>& metadata = {});
// Writes atomically and durably: a temporary file in the same directory, fsync, rename,
// then fsync of the directory (so the rename itself survives a crash).
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});
// fsync of a directory: makes the entries created, renamed or removed in it durable.
void fsync_directory(const std::string& dir);

}  // namespace hmoe::io
