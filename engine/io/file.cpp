// Whole-file reads, atomic and durable writes, checked appends and flock locks on POSIX
// descriptors.
#include "engine/io/file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "engine/error.h"

namespace hmoe::io {

namespace {

// Closes a descriptor on every path out of a scope.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  // Closes now, reporting the error a deferred write may only show here.
  int close() {
    const int r = ::close(fd_);
    fd_ = -1;
    return r;
  }
  // Hands the descriptor to the caller, who closes it.
  int release() {
    const int f = fd_;
    fd_ = -1;
    return f;
  }

 private:
  int fd_;
};

// Writes all of bytes at the descriptor's position, retrying short writes and EINTR;
// returns 0 or the errno of the failure (ENOSPC for a write that wrote nothing).
int write_all(int fd, std::string_view bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? errno : ENOSPC;
    done += size_t(n);
  }
  return 0;
}

}  // namespace

std::vector<uint8_t> read_file(const std::string& path, const std::string& what, size_t max_bytes) {
  // O_NONBLOCK: opening a FIFO with no writer must not block; regular files ignore it.
  Fd fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  HMOE_CHECK(fd.get() >= 0, what, ": cannot open '", path, "': ", std::strerror(errno));
  struct stat st {};
  HMOE_CHECK(::fstat(fd.get(), &st) == 0, what, ": cannot stat '", path, "': ", std::strerror(errno));
  HMOE_CHECK(S_ISREG(st.st_mode), what, ": '", path, "' is not a regular file");
  const size_t size = size_t(st.st_size);
  HMOE_CHECK(size <= max_bytes, what, ": '", path, "' is ", size, " bytes, more than the ", max_bytes, " allowed");
  std::vector<uint8_t> buf(size);
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::read(fd.get(), buf.data() + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    HMOE_CHECK(n >= 0, what, ": reading '", path, "' failed: ", std::strerror(errno));
    HMOE_CHECK(n > 0, what, ": '", path, "' ended after ", done, " of ", size, " bytes (changed while read?)");
    done += size_t(n);
  }
  return buf;
}

std::string read_text_file(const std::string& path, const std::string& what, size_t max_bytes) {
  const std::vector<uint8_t> b = read_file(path, what, max_bytes);
  return std::string(b.begin(), b.end());
}

void write_file_atomic(const std::string& path, std::string_view bytes, const std::string& what) {
  const std::string tmp = path + ".tmp";
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  HMOE_CHECK(fd.get() >= 0, what, ": cannot write '", tmp, "': ", std::strerror(errno));
  auto fail = [&](const char* step, int err) {
    fd.close();
    std::remove(tmp.c_str());
    HMOE_FAIL(what, ": ", step, " '", tmp, "' failed: ", std::strerror(err));
  };
  if (const int err = write_all(fd.get(), bytes)) fail("writing", err);
  if (::fsync(fd.get()) != 0) fail("fsync of", errno);
  if (fd.close() != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    HMOE_FAIL(what, ": closing '", tmp, "' failed: ", std::strerror(err));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    HMOE_FAIL(what, ": renaming '", tmp, "' to '", path, "' failed: ", ec.message());
  }
  fsync_directory(std::filesystem::absolute(path).parent_path().string());
}

void fsync_directory(const std::string& dir) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  HMOE_CHECK(fd.get() >= 0, "fsync: cannot open the directory '", dir, "': ", std::strerror(errno));
  HMOE_CHECK(::fsync(fd.get()) == 0, "fsync of the directory '", dir, "' failed: ", std::strerror(errno));
}

AppendFile::AppendFile(const std::string& path, bool truncate, const std::string& what)
    : fd_(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (truncate ? O_TRUNC : 0), 0644)),
      path_(path),
      what_(what) {
  HMOE_CHECK(fd_ >= 0, what, ": cannot write '", path, "': ", std::strerror(errno));
}

AppendFile::~AppendFile() { ::close(fd_); }

void AppendFile::write(std::string_view bytes) {
  const int err = write_all(fd_, bytes);
  HMOE_CHECK(err == 0, what_, ": writing '", path_, "' failed: ", std::strerror(err));
}

void AppendFile::sync() {
  HMOE_CHECK(::fsync(fd_) == 0, what_, ": fsync of '", path_, "' failed: ", std::strerror(errno));
}

FileLock::FileLock(const std::string& path, Mode mode, bool wait, bool create, const std::string& what)
    : path_(path), what_(what) {
  Fd fd(::open(path.c_str(), (create ? O_RDWR | O_CREAT : O_RDONLY) | O_CLOEXEC, 0644));
  if (fd.get() < 0 && !create && errno == ENOENT) return;
  HMOE_CHECK(fd.get() >= 0, what, ": cannot open the lock file '", path, "': ", std::strerror(errno));
  const int op = (mode == Mode::exclusive ? LOCK_EX : LOCK_SH) | (wait ? 0 : LOCK_NB);
  int r;
  while ((r = ::flock(fd.get(), op)) != 0 && errno == EINTR) {
  }
  if (r != 0 && errno == EWOULDBLOCK) return;
  HMOE_CHECK(r == 0, what, ": cannot lock '", path, "': ", std::strerror(errno));
  fd_ = fd.release();
}

FileLock::~FileLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the last descriptor releases the lock
}

FileLock::FileLock(FileLock&& o) noexcept : fd_(o.fd_), path_(std::move(o.path_)), what_(std::move(o.what_)) {
  o.fd_ = -1;
}

void FileLock::write_contents(std::string_view text) {
  HMOE_CHECK(held(), what_, ": the lock on '", path_, "' is not held");
  HMOE_CHECK(::ftruncate(fd_, 0) == 0 && ::lseek(fd_, 0, SEEK_SET) == 0, what_, ": cannot write '", path_,
             "': ", std::strerror(errno));
  const int err = write_all(fd_, text);
  HMOE_CHECK(err == 0, what_, ": writing '", path_, "' failed: ", std::strerror(err));
}

uint64_t free_bytes(const std::string& path, const std::string& what) {
  struct statvfs st {};
  HMOE_CHECK(::statvfs(path.c_str(), &st) == 0, what, ": cannot read the free space of '", path,
             "': ", std::strerror(errno));
  return uint64_t(st.f_bavail) * uint64_t(st.f_frsize);
}

}  // namespace hmoe::io
