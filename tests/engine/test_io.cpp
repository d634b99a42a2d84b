// engine/io: whole-file reads that refuse what is not a regular file and say why, atomic
// writes that leave the old file whole when a write fails, and bounded JSON parsing.
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "engine/io/file.h"
#include "engine/io/json.h"
#include "tests/support/test_util.h"

using namespace hmoe;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path = fs::temp_directory_path() / ("hmoe_io_" + std::to_string(::getpid()));
  TempDir() { fs::create_directories(path); }
  ~TempDir() { fs::remove_all(path); }
};

}  // namespace

TEST(IoFile, ReadsRegularFilesAndSaysWhyNot) {
  TempDir d;
  const std::string p = (d.path / "a.txt").string();
  std::ofstream(p) << "hello";
  EXPECT_EQ(io::read_text_file(p, "config"), "hello");
  EXPECT_HMOE_ERROR(io::read_text_file(p, "config", 3), "more than the 3 allowed");
  EXPECT_HMOE_ERROR(io::read_file((d.path / "none").string(), "data"), "data: cannot open");
  EXPECT_HMOE_ERROR(io::read_file((d.path / "none").string(), "data"), "No such file or directory");
  EXPECT_HMOE_ERROR(io::read_file(d.path.string(), "data"), "not a regular file");
  // A FIFO with no writer: refused at once instead of blocking for ever.
  const std::string fifo = (d.path / "fifo").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_HMOE_ERROR(io::read_file(fifo, "data"), "not a regular file");
}

TEST(IoFile, AtomicWriteReplacesOrLeavesTheOldFileWhole) {
  TempDir d;
  const std::string p = (d.path / "metrics.jsonl").string();
  io::write_file_atomic(p, "old\n", "metrics");
  io::write_file_atomic(p, "new\n", "metrics");
  EXPECT_EQ(io::read_text_file(p, "metrics"), "new\n");
  EXPECT_FALSE(fs::exists(p + ".tmp"));
  // A write that fails part-way (as on a full disk: here a file-size limit of 4 KiB in a
  // child process) must report why and leave the old file and no temporary behind.
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::signal(SIGXFSZ, SIG_IGN);
    const rlimit lim{4096, 4096};
    ::setrlimit(RLIMIT_FSIZE, &lim);
    try {
      io::write_file_atomic(p, std::string(1 << 20, 'x'), "metrics");
    } catch (const Error& e) {
      _exit(std::string(e.what()).find("File too large") != std::string::npos ? 0 : 2);
    }
    _exit(1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: no error; 2: the error did not say why";
  EXPECT_EQ(io::read_text_file(p, "metrics"), "new\n");
  EXPECT_FALSE(fs::exists(p + ".tmp"));
  EXPECT_HMOE_ERROR(io::write_file_atomic((d.path / "no" / "dir").string(), "x", "metrics"), "No such file");
}

TEST(IoJson, BoundsNestingRefusesDuplicateKeysAndDescribesBriefly) {
  EXPECT_EQ(io::parse_json(R"({"a": [1, {"b": 2}]})", "config")["a"][1]["b"], 2);
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  EXPECT_HMOE_ERROR(io::parse_json(deep, "config"), "config: JSON nested deeper than 64 levels");
  EXPECT_NO_THROW(io::parse_json(std::string(60, '[') + std::string(60, ']'), "config"));
  EXPECT_HMOE_ERROR(io::parse_json(R"({"lr": 1, "x": {"lr": 2}, "lr": 3})", "config"), "the key \"lr\" appears twice");
  EXPECT_NO_THROW(io::parse_json(R"({"lr": 1, "x": {"lr": 2}})", "config"));
  EXPECT_HMOE_ERROR(io::parse_json("{\"a\": ", "config"), "config: not valid JSON");
  EXPECT_EQ(io::json_brief(nlohmann::json::array({1, 2, 3})), "an array of 3 values");
  EXPECT_EQ(io::json_brief(nlohmann::json(std::string(500, 'z'))).size(), 83u);
}
