/// @file
/// Whole-file reads and durable writes with errors that say why (strerror): the one way
/// hmoe reads a user's file (checkpoints, configs, data) and writes a file a crash must
/// not tear (checkpoints, metrics); appends checked write by write, advisory locks
/// (flock) and the free space of a file system.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace hmoe::io {

/// The bytes of a regular file. Refuses what is not a regular file (a FIFO or a device
/// would block or never end) and files over max_bytes; `what` begins every error
/// ("config", "data", "safetensors").
std::vector<uint8_t> read_file(const std::string& path, const std::string& what, size_t max_bytes = SIZE_MAX);
/// The file as text (as read_file).
std::string read_text_file(const std::string& path, const std::string& what, size_t max_bytes = SIZE_MAX);

/// Replaces path with bytes atomically and durably: a temporary file in the same
/// directory, every write checked, fsync, rename, fsync of the directory. On any failure
/// (a full disk, say) the old file is untouched and the temporary file removed.
void write_file_atomic(const std::string& path, std::string_view bytes, const std::string& what);

/// fsync of a directory: makes the entries created, renamed or removed in it durable.
void fsync_directory(const std::string& dir);

/// A file written by appends (a log such as metrics.jsonl): every write checked, so a full
/// disk is an error that says why, never a silently short file.
class AppendFile {
 public:
  /// Opens path for appending, creating it, or emptying it first when `truncate`.
  AppendFile(const std::string& path, bool truncate, const std::string& what);
  ~AppendFile();
  AppendFile(const AppendFile&) = delete;
  AppendFile& operator=(const AppendFile&) = delete;
  /// Appends bytes; an hmoe::Error naming the file and the reason if not all are written.
  void write(std::string_view bytes);
  void sync();  ///< fsync: what was written survives a crash

 private:
  int fd_;
  std::string path_, what_;
};

/// An advisory lock (flock) on a file, held until destroyed. Exclusive: one holder;
/// shared: any number of holders, none exclusive. Locks taken through two opens conflict
/// even within one process.
class FileLock {
 public:
  /// Shared or exclusive.
  enum class Mode { shared, exclusive };
  /// Opens path (created when `create`) and locks it, waiting while a conflicting lock is
  /// held when `wait`. Without `wait`, a conflict leaves the lock not held (held() false).
  /// With `create` false, a missing file leaves it not held too.
  FileLock(const std::string& path, Mode mode, bool wait, bool create, const std::string& what);
  ~FileLock();
  /// Takes the lock over from o, which no longer holds it.
  FileLock(FileLock&& o) noexcept;
  FileLock& operator=(FileLock&&) = delete;
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  /// Whether the lock is held.
  bool held() const { return fd_ >= 0; }
  /// Replaces the file's contents (the holder writes who it is, for others' messages).
  void write_contents(std::string_view text);

 private:
  int fd_ = -1;
  std::string path_, what_;
};

/// Bytes an unprivileged user may still write on the file system holding `path`.
uint64_t free_bytes(const std::string& path, const std::string& what);

}  // namespace hmoe::io
