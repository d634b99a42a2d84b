// safetensors: round trips of every dtype (empty and 0-d included), strict rejection
// of malformed and hostile files, digests that name a damaged tensor, atomic writes, and
// interoperability with the Python package.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "engine/io/safetensors.h"
#include "tests/support/test_util.h"

using namespace hmoe;
using namespace hmoe::testing;
namespace fs = std::filesystem;

namespace {
std::vector<uint8_t> file_with_header(const std::string& json, size_t data_bytes) {
  std::vector<uint8_t> b(8 + json.size() + data_bytes, 0);
  for (int i = 0; i < 8; ++i) b[size_t(i)] = uint8_t(uint64_t(json.size()) >> (8 * i));
  std::memcpy(b.data() + 8, json.data(), json.size());
  return b;
}
void expect_rejects(const std::vector<uint8_t>& b, const std::string& what) {
  EXPECT_HMOE_ERROR(io::parse_safetensors(b.data(), b.size()), what);
}
// Offset of the first occurrence of `needle` in b.
size_t find_bytes(const std::vector<uint8_t>& b, const std::string& needle) {
  const auto it = std::search(b.begin(), b.end(), needle.begin(), needle.end());
  EXPECT_NE(it, b.end()) << needle;
  return size_t(it - b.begin());
}
}  // namespace

TEST(Safetensors, RoundTripEveryDtype) {
  std::vector<std::pair<std::string, Tensor>> ts;
  for (DType d : {DType::f64, DType::f32, DType::f16, DType::bf16, DType::i64, DType::i32})
    ts.emplace_back(std::string(dtype_name(d)), rand_t({3, 2}, 1, -5, 5).to(d));
  ts.emplace_back("bool", gt(rand_t({4}, 2), full({}, 0.0)));
  ts.emplace_back("empty", zeros({0, 3}));
  ts.emplace_back("scalar", full({}, 3.5));
  ts.emplace_back("strided", rand_t({4, 3}, 3).t());
  const fs::path path = fs::temp_directory_path() / ("hmoe_st_" + std::to_string(::getpid()) + ".safetensors");
  io::save_safetensors(path.string(), ts, {{"note", "hello"}});
  EXPECT_FALSE(fs::exists(path.string() + ".tmp"));
  auto back = io::load_safetensors(path.string());
  EXPECT_EQ(back.metadata.at("note"), "hello");
  ASSERT_EQ(back.tensors.size(), ts.size());
  for (auto& [n, t] : ts) {
    SCOPED_TRACE(n);
    EXPECT_EQ(back.tensors.at(n).dtype(), t.dtype());
    expect_close(back.tensors.at(n), t, 0);
  }
  fs::remove(path);
}

TEST(Safetensors, RejectsMalformedFiles) {
  expect_rejects({1, 2, 3}, "too short");
  EXPECT_NO_THROW(io::parse_safetensors(file_with_header("{}", 0).data(), 10));
  auto b = file_with_header("{}", 0);
  b[0] = 0xff;
  b[5] = 1;
  expect_rejects(b, "runs past the end");
  expect_rejects(file_with_header("{\"a\": ", 0), "not valid JSON");
  expect_rejects(file_with_header(R"({"a": {"dtype": "F8", "shape": [1], "data_offsets": [0, 1]}})", 1), "unknown");
  expect_rejects(file_with_header(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}})", 4), "needs 8");
  expect_rejects(file_with_header(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]}})", 4), "outside");
  expect_rejects(file_with_header(R"({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4),
                 "non-negative");
  expect_rejects(file_with_header(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                                  R"( "b": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]}})", 8), "overlap");
  expect_rejects(file_with_header(R"({"a": {"dtype": "F32", "shape": [1]}})", 4), "needs dtype");
  expect_rejects(file_with_header(R"({"__metadata__": {"k": 1}})", 0), "not a string");
  EXPECT_HMOE_ERROR(io::load_safetensors("/nonexistent/x.safetensors"), "No such file");
  // Values are described, never dumped whole, and nesting is bounded (a 100,000-deep
  // shape used to overflow the stack while the error message printed it).
  expect_rejects(file_with_header(R"({"a": {"dtype": "F32", "shape": [[1]], "data_offsets": [0, 4]}})", 4),
                 "got an array of 1 values");
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  expect_rejects(file_with_header(R"({"a": {"dtype": "F32", "shape": )" + deep + R"(, "data_offsets": [0, 4]}})", 4),
                 "nested deeper than");
  expect_rejects(file_with_header(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                                  R"( "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", 4),
                 "appears twice");
}

TEST(Safetensors, DigestsNameTheDamagedTensorOrMetadata) {
  const Tensor a = rand_t({4, 4}, 1, -1, 1, DType::f32), b = rand_t({8}, 2, -1, 1, DType::f32);
  const std::vector<uint8_t> good = io::serialize_safetensors({{"a", a}, {"b", b}}, {{"step", "30"}});
  const io::SafeTensors st = io::parse_safetensors(good.data(), good.size());
  EXPECT_EQ(st.metadata.size(), 1u) << "the digests are not the caller's metadata";
  EXPECT_EQ(st.digest, io::safetensors_digest({{"b", b}, {"a", a}})) << "one digest, whatever the order";
  EXPECT_NE(st.digest, io::safetensors_digest({{"a", a}, {"b", b * 2.0}}));
  EXPECT_NE(st.digest, io::safetensors_digest({{"a", a}, {"b", b.reshape({2, 4})}}));
  // One flipped exponent bit in b's data (b follows a in the data section).
  std::vector<uint8_t> bad = good;
  bad[bad.size() - 4 * 8 + 3] ^= 0x40;
  expect_rejects(bad, "tensor 'b' is damaged");
  // The metadata value "30" becomes "20".
  bad = good;
  bad[find_bytes(bad, "\"30\"") + 1] = '2';
  expect_rejects(bad, "metadata is damaged");
  // Digest entries are ours alone, and each must match a tensor.
  EXPECT_HMOE_ERROR(io::serialize_safetensors({{"a", a}}, {{"xxh3_64:a", "0"}}), "reserved prefix");
  expect_rejects(file_with_header(R"({"__metadata__": {"xxh3_64:zz": "0"}})", 0), "which the file does not hold");
  // Files without digests (other tools) load.
  const auto plain = file_with_header(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", 4);
  EXPECT_NO_THROW(io::parse_safetensors(plain.data(), plain.size()));
}

TEST(Safetensors, InteropWithPythonPackage) {
  if (std::system("python3 -c 'import safetensors, numpy' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "python3 with the safetensors and numpy packages is not installed (pip install safetensors numpy)";
  const fs::path dir = fs::temp_directory_path() / ("hmoe_interop_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string ours = (dir / "ours.safetensors").string(), theirs = (dir / "theirs.safetensors").string();
  io::save_safetensors(ours, {{"w", from_vector(std::vector<double>{1, 2, 3, 4}, {2, 2}, {DType::f32})}});
  const std::string py =
      "python3 -c \"import numpy as np; from safetensors.numpy import load_file, save_file; "
      "d = load_file('" + ours + "'); assert d['w'].tolist() == [[1, 2], [3, 4]]; "
      "save_file({'x': np.arange(6, dtype=np.int64).reshape(2, 3), 'y': np.ones(3, dtype=np.float16)}, '" + theirs +
      "')\"";
  ASSERT_EQ(std::system(py.c_str()), 0);
  auto back = io::load_safetensors(theirs);
  expect_close(back.tensors.at("x"), {0, 1, 2, 3, 4, 5});
  EXPECT_EQ(back.tensors.at("y").dtype(), DType::f16);
  fs::remove_all(dir);
}
