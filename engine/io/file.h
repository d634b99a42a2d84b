// Whole-file reads and durable writes with errors that say why (strerror): the one way
// hmoe reads a user's file (checkpoints, configs, data) and writes a file a crash must
// not tear (checkpoints, metrics).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace hmoe::io {

// The bytes of a regular file. Refuses what is not a regular file (a FIFO or a device
// would block or never end) and files over max_bytes; `what` begins every error
// ("config", "data", "safetensors").
std::vector<uint8_t> read_file(const std::string& path, const std::string& what, size_t max_bytes = SIZE_MAX);
std::string read_text_file(const std::string& path, const std::string& what, size_t max_bytes = SIZE_MAX);

// Replaces path with bytes atomically and durably: a temporary file in the same
// directory, every write checked, fsync, rename, fsync of the directory. On any failure
// (a full disk, say) the old file is untouched and the temporary file removed.
void write_file_atomic(const std::string& path, std::string_view bytes, const std::string& what);

// fsync of a directory: makes the entries created, renamed or removed in it durable.
void fsync_directory(const std::string& dir);

}  // namespace hmoe::io
