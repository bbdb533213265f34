// The safetensors reader and writer: round trips, the half-precision dtypes from hand-made bytes,
// one test per way a file can be broken (each must be refused with a message naming the file and
// the tensor), and a seeded mutation fuzz test that may only ever end in success or dchag::Error.
#include <dchag/io/safetensors.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <csignal>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

namespace {

namespace fs = std::filesystem;

// A fresh directory per process (ctest may run several test programs at once), removed at exit
// by the same static that holds its name.
struct Scratch {
  fs::path dir;
  Scratch() {
    long pid = 0;
#if defined(__unix__) || defined(__APPLE__)
    pid = static_cast<long>(::getpid());
#endif
    dir = fs::temp_directory_path() / ("dchag_test_safetensors_" + std::to_string(pid));
    fs::create_directories(dir);
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

const fs::path& scratch() {
  static const Scratch s;
  return s.dir;
}

std::string path_of(const std::string& name) { return (scratch() / name).string(); }

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void spit(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string le64(std::uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

// A file from a header text and raw data bytes.
std::string file_bytes(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

std::string u16s(const std::vector<std::uint16_t>& v) {
  std::string s;
  for (auto x : v) {
    s += static_cast<char>(x & 0xff);
    s += static_cast<char>(x >> 8);
  }
  return s;
}

// Writes `bytes` to a file named after the test and opens it: every bad-input case goes through
// the real file path, so the messages are checked to name the file.
dchag::SafetensorsFile open_bytes(const std::string& name, const std::string& bytes) {
  const std::string p = path_of(name + ".safetensors");
  spit(p, bytes);
  return dchag::SafetensorsFile::read(p);
}

#define CHECK_REFUSED(name, bytes, fragment)                                                 \
  do {                                                                                       \
    CHECK_THROWS_WITH_AS(open_bytes(name, bytes), doctest::Contains(fragment), dchag::Error); \
    CHECK_THROWS_WITH_AS(open_bytes(name, bytes), doctest::Contains(name ".safetensors"),    \
                         dchag::Error);                                                      \
  } while (0)

const std::string eight_bytes(8, 'x');  // data of one F32 [2] tensor

}  // namespace

TEST_CASE("safetensors: F32 round trip with metadata, scalars and empty tensors") {
  const std::vector<float> a = {1.5f, -2.25f, 3e-38f, std::numeric_limits<float>::max(), 0.f,
                                -0.f};
  const float s = 42.f;
  const std::string p = path_of("round_f32.safetensors");
  dchag::write_safetensors<float>(
      p, {{"a.weight", {2, 3}, a.data()}, {"scalar", {}, &s}, {"empty", {0, 4}, nullptr}},
      {{"step", "7"}, {"note", "quote \" backslash \\ newline \n tab \t unicode \xc3\xa9"}});
  const auto f = dchag::SafetensorsFile::read(p);
  CHECK(f.size() == 3);
  CHECK(f.names() == std::vector<std::string>{"a.weight", "scalar", "empty"});
  CHECK(f.info("a.weight").dtype == "F32");
  CHECK(f.info("a.weight").shape == std::vector<std::size_t>{2, 3});
  CHECK(f.info("scalar").shape.empty());
  CHECK(f.info("empty").elements() == 0);
  CHECK(f.metadata().at("step") == "7");
  CHECK(f.metadata().at("note") == "quote \" backslash \\ newline \n tab \t unicode \xc3\xa9");
  const auto back = f.read<float>("a.weight");
  CHECK(std::memcmp(back.data(), a.data(), sizeof(float) * a.size()) == 0);
  const auto wide = f.read<double>("a.weight");
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(wide[i] == double(a[i]));
  CHECK(f.read<float>("scalar") == std::vector<float>{42.f});
  CHECK(f.read<double>("empty").empty());
  // The data start on an 8-byte boundary, as the reference writer leaves them.
  const std::string bytes = slurp(p);
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  CHECK(n % 8 == 0);
  CHECK(bytes.size() == 8 + n + 4 * 7);
}

TEST_CASE("safetensors: F64 round trip, and reading converts to float") {
  std::vector<double> a(3 * 4 * 5);
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = std::sin(double(i)) * 1e3 + 1.0 / 3.0;
  const std::string p = path_of("round_f64.safetensors");
  dchag::write_safetensors<double>(p, {{"x", {3, 4, 5}, a.data()}});
  const auto f = dchag::SafetensorsFile::read(p);
  CHECK(f.metadata().empty());  // the writer's checksums are not shown as metadata
  CHECK(f.info("x").dtype == "F64");
  CHECK(f.read<double>("x") == a);
  const auto narrow = f.read<float>("x");
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(narrow[i] == static_cast<float>(a[i]));
  std::vector<double> out(a.size());
  CHECK_THROWS_WITH_AS(f.read("x", out.data(), 7), doctest::Contains("room for 7"), dchag::Error);
  CHECK_THROWS_WITH_AS(f.info("nope"), doctest::Contains("no tensor 'nope'"), dchag::Error);
}

TEST_CASE("safetensors: F16 from hand-made bytes") {
  // 1, -2, 1/3 rounded, largest half, smallest subnormal, largest subnormal, -0, inf, -inf
  const std::vector<std::uint16_t> bits = {0x3c00, 0xc000, 0x3555, 0x7bff, 0x0001,
                                           0x03ff, 0x8000, 0x7c00, 0xfc00, 0x7e00};
  const std::vector<double> expect = {1.0,
                                      -2.0,
                                      0.333251953125,
                                      65504.0,
                                      std::ldexp(1.0, -24),
                                      1023.0 * std::ldexp(1.0, -24),
                                      -0.0,
                                      std::numeric_limits<double>::infinity(),
                                      -std::numeric_limits<double>::infinity()};
  const std::string header = R"({"h":{"dtype":"F16","shape":[10],"data_offsets":[0,20]}})";
  const auto f = dchag::SafetensorsFile::from_bytes(file_bytes(header, u16s(bits)), "f16 buffer");
  const auto d = f.read<double>("h");
  const auto s = f.read<float>("h");
  for (std::size_t i = 0; i < expect.size(); ++i) {
    CAPTURE(i);
    CHECK(d[i] == expect[i]);
    CHECK(double(s[i]) == expect[i]);
  }
  CHECK(std::signbit(d[6]));
  CHECK(std::isnan(d[9]));
}

TEST_CASE("safetensors: BF16 from hand-made bytes") {
  const std::vector<std::uint16_t> bits = {0x3f80, 0xc040, 0x4049, 0x0000, 0x7f80, 0x0001, 0x7fc0};
  const std::vector<double> expect = {1.0, -3.0, 3.140625, 0.0,
                                      std::numeric_limits<double>::infinity(),
                                      std::ldexp(1.0, -133)};
  const std::string header =
      R"({"__metadata__":{"k":"v"},"b":{"dtype":"BF16","shape":[7],"data_offsets":[0,14]}})";
  const auto f = dchag::SafetensorsFile::from_bytes(file_bytes(header, u16s(bits)));
  const auto d = f.read<double>("b");
  for (std::size_t i = 0; i < expect.size(); ++i) {
    CAPTURE(i);
    CHECK(d[i] == expect[i]);
  }
  CHECK(std::isnan(d[6]));
  CHECK(f.read<float>("b")[2] == 3.140625f);
}

TEST_CASE("safetensors: BF16 and F16 written from 16-bit values, read back into any scalar") {
  // Every finite bf16 and fp16 pattern of the positive half, and their negatives.
  std::vector<dchag::bf16> b;
  std::vector<dchag::fp16> h;
  for (std::uint32_t u = 0; u < 0x10000u; ++u) {
    const auto bits = static_cast<std::uint16_t>(u);
    if (std::isfinite(float(dchag::bf16::from_bits(bits)))) b.push_back(dchag::bf16::from_bits(bits));
    if (std::isfinite(float(dchag::fp16::from_bits(bits)))) h.push_back(dchag::fp16::from_bits(bits));
  }
  const std::string p = path_of("round_16.safetensors");
  {
    dchag::SafetensorsWriter w(p, {{"b", "BF16", {b.size()}}, {"h", "F16", {h.size()}}}, {});
    w.write("b", b.data(), b.size());
    w.write("h", h.data(), h.size());
    w.commit();
  }
  const auto f = dchag::SafetensorsFile::read(p);
  CHECK(f.info("b").dtype == "BF16");
  CHECK(f.info("h").dtype == "F16");
  const auto b_back = f.read<dchag::bf16>("b");
  const auto h_back = f.read<dchag::fp16>("h");
  const auto b_wide = f.read<double>("b");
  const auto h_wide = f.read<float>("h");
  bool same = true;
  for (std::size_t i = 0; i < b.size(); ++i)
    same = same && b_back[i].bits == b[i].bits && b_wide[i] == double(float(b[i]));
  for (std::size_t i = 0; i < h.size(); ++i)
    same = same && h_back[i].bits == h[i].bits && h_wide[i] == float(h[i]);
  CHECK(same);
  // The file's bytes are the values' bits, little-endian, as PyTorch writes them.
  const std::string bytes = slurp(p);
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  const std::size_t at = 8 + n + 2 * 1000;
  CHECK(std::uint16_t(static_cast<unsigned char>(bytes[at]) |
                      (static_cast<unsigned char>(bytes[at + 1]) << 8)) == b[1000].bits);
  // Narrowing on read and on write rounds to nearest even: F32 into bf16, float written as F16.
  const float x[3] = {1.0f + std::ldexp(1.0f, -8), 1.0f + 3 * std::ldexp(1.0f, -9), 70000.0f};
  const std::string q = path_of("narrow.safetensors");
  {
    dchag::SafetensorsWriter w(q, {{"f", "F32", {3}}, {"h", "F16", {3}}}, {});
    w.write("f", x, 3);
    w.write("h", x, 3);
    w.commit();
  }
  const auto g = dchag::SafetensorsFile::read(q);
  const auto fb = g.read<dchag::bf16>("f");
  CHECK(fb[0].bits == dchag::bf16(1.0f).bits);         // a tie: to even
  CHECK(float(fb[1]) == 1.0f + std::ldexp(1.0f, -7));  // above the tie: up
  const auto hf = g.read<float>("h");
  CHECK(hf[0] == float(dchag::fp16(x[0])));
  CHECK(std::isinf(hf[2]));  // beyond half's range
}

TEST_CASE("safetensors: other dtypes validate but are not read as floating point") {
  const std::string header =
      R"({"i":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},"f":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})";
  std::string data = le64(5);
  float two[2] = {1.f, 2.f};
  data.append(reinterpret_cast<const char*>(two), 8);  // the test host is little-endian
  const auto f = open_bytes("int_dtype", file_bytes(header, data));
  CHECK(f.read<float>("f") == std::vector<float>{1.f, 2.f});
  CHECK_THROWS_WITH_AS(f.read<double>("i"), doctest::Contains("cannot be read as floating point"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(f.read<double>("i"), doctest::Contains("'i'"), dchag::Error);
}

TEST_CASE("safetensors: whitespace and escapes in the header are read as JSON") {
  const std::string header =
      " {\n \"w\\u00e9ight\\t\" : { \"shape\" : [ 2 ] ,\r\n \"dtype\":\"F32\", "
      "\"data_offsets\":[0, 8] }, \"__metadata__\": {\"\\ud83d\\ude00\": \"\\/\"}}   ";
  const auto f = dchag::SafetensorsFile::from_bytes(file_bytes(header, eight_bytes));
  CHECK(f.contains("w\xc3\xa9ight\t"));
  CHECK(f.metadata().at("\xf0\x9f\x98\x80") == "/");
}

// ---- every way a file can be broken, one test each ------------------------------------------

TEST_CASE("safetensors refuses: a file that does not exist") {
  CHECK_THROWS_WITH_AS(dchag::SafetensorsFile::read(path_of("no_such.safetensors")),
                       doctest::Contains("no_such.safetensors': cannot open"), dchag::Error);
}

TEST_CASE("safetensors refuses: a file shorter than 8 bytes") {
  CHECK_REFUSED("short", std::string("\x05\x00\x00", 3), "shorter than the 8-byte header length");
  CHECK_REFUSED("empty_file", std::string(), "the file is 0 bytes");
}

TEST_CASE("safetensors refuses: a header length past the end of the file") {
  const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  std::string bytes = file_bytes(header, eight_bytes);
  bytes.replace(0, 8, le64(header.size() + 9));
  CHECK_REFUSED("long_header", bytes, "runs past the end of the file");
}

TEST_CASE("safetensors refuses: an absurdly large header length") {
  CHECK_REFUSED("absurd", le64(std::uint64_t(1) << 60) + "{}", "absurdly large");
  CHECK_REFUSED("absurd_max", le64(~std::uint64_t(0)) + "{}", "absurdly large");
}

TEST_CASE("safetensors refuses: invalid JSON") {
  CHECK_REFUSED("json_truncated", file_bytes(R"({"a":{"dtype":"F32","shape":[2],)", ""),
                "invalid JSON header");
  CHECK_REFUSED("json_empty", file_bytes("", ""), "the header is empty");
  CHECK_REFUSED("json_comma", file_bytes(R"({"__metadata__":{"a":"b",}})", ""),
                "invalid JSON header");
  CHECK_REFUSED("json_literal", file_bytes(R"({"a":true})", ""), "expected a value");
  CHECK_REFUSED("json_float",
                file_bytes(R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})",
                           eight_bytes),
                "only integers");
  CHECK_REFUSED("json_leading_zero", file_bytes(R"({"a":{"shape":[02]}})", ""), "leading zeros");
  CHECK_REFUSED("json_trailing", file_bytes(R"({} {})", ""), "unexpected text after");
  CHECK_REFUSED("json_control", file_bytes("{\"a\tb\":{}}", ""), "control character");
  CHECK_REFUSED("json_escape", file_bytes(R"({"a\q":{}})", ""), "unknown escape");
  CHECK_REFUSED("json_surrogate", file_bytes(R"({"\udc00":{}})", ""), "lone low surrogate");
  CHECK_REFUSED("json_utf8", file_bytes("{\"\xc3(\":{}}", ""), "invalid UTF-8");
  CHECK_REFUSED("json_overlong", file_bytes("{\"\xc0\xaf\":{}}", ""), "invalid UTF-8");
  CHECK_REFUSED("json_huge_int", file_bytes(R"({"a":{"shape":[99999999999999999999]}})", ""),
                "too large for 64 bits");
  // Nothing nests deeper than the format does, so no input makes the parser recurse.
  CHECK_REFUSED("json_deep",
                file_bytes(R"({"__metadata__":{"k":)" + std::string(100000, '[') + "]}}", ""),
                "metadata entry 'k' is an array, not a string");
  CHECK_REFUSED("json_array", file_bytes("[]", ""), "the header is an array, not a JSON object");
}

TEST_CASE("safetensors refuses: an unknown dtype") {
  CHECK_REFUSED("bad_dtype",
                file_bytes(R"({"w":{"dtype":"F17","shape":[2],"data_offsets":[0,8]}})", eight_bytes),
                "tensor 'w' has unknown dtype 'F17'");
}

TEST_CASE("safetensors refuses: a shape that does not match the byte range") {
  CHECK_REFUSED("size_mismatch",
                file_bytes(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight_bytes),
                "tensor 'w': shape [3] of F32 needs 12 bytes, but data_offsets [0, 8] hold 8");
  CHECK_REFUSED("shape_overflow",
                file_bytes(R"({"w":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})",
                           eight_bytes),
                "more elements than can be addressed");
}

TEST_CASE("safetensors refuses: overlapping byte ranges") {
  CHECK_REFUSED("overlap",
                file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                           eight_bytes),
                "tensor 'b': data_offsets [4, 8] overlap those of tensor 'a'");
}

TEST_CASE("safetensors refuses: a gap between byte ranges") {
  CHECK_REFUSED("gap",
                file_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                           R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                           std::string(12, 'x')),
                "tensor 'b': data_offsets [8, 12] leave a gap: bytes [4, 8)");
  CHECK_REFUSED("gap_at_start",
                file_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", eight_bytes),
                "leave a gap: bytes [0, 4)");
}

TEST_CASE("safetensors refuses: byte ranges past the data") {
  CHECK_REFUSED("past_data",
                file_bytes(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", eight_bytes),
                "tensor 'a': data_offsets [0, 16] run past the end of the data (8 bytes)");
  CHECK_REFUSED("reversed",
                file_bytes(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", eight_bytes),
                "end before they begin");
}

TEST_CASE("safetensors refuses: bytes after the last tensor") {
  CHECK_REFUSED("trailing",
                file_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", eight_bytes),
                "trailing bytes after the last tensor");
}

TEST_CASE("safetensors refuses: duplicate names") {
  CHECK_REFUSED("duplicate",
                file_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                           R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                           eight_bytes),
                "duplicate tensor name 'a'");
  CHECK_REFUSED("duplicate_field",
                file_bytes(R"({"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                           eight_bytes),
                "duplicate key 'dtype'");
}

TEST_CASE("safetensors refuses: malformed tensor entries and metadata") {
  CHECK_REFUSED("missing_field", file_bytes(R"({"a":{"dtype":"F32","shape":[2]}})", eight_bytes),
                "tensor 'a' lacks \"data_offsets\"");
  CHECK_REFUSED("unknown_field",
                file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":"y"}})",
                           eight_bytes),
                "tensor 'a' has an unknown field 'x'");
  CHECK_REFUSED("negative",
                file_bytes(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", eight_bytes),
                "tensor 'a': shape entries must be non-negative integers");
  CHECK_REFUSED("three_offsets",
                file_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}})", eight_bytes),
                "data_offsets must be an array [begin, end]");
  CHECK_REFUSED("entry_string", file_bytes(R"({"a":"F32"})", ""),
                "tensor 'a' is described by a string");
  CHECK_REFUSED("metadata_int", file_bytes(R"({"__metadata__":{"step":3}})", ""),
                "metadata entry 'step' is an integer, not a string");
  CHECK_REFUSED("metadata_array", file_bytes(R"({"__metadata__":[]})", ""),
                "\"__metadata__\" is an array");
}

TEST_CASE("safetensors: the writer refuses what no reader would accept, and is atomic") {
  const float v[2] = {1.f, 2.f};
  const std::string p = path_of("atomic.safetensors");
  dchag::write_safetensors<float>(p, {{"keep", {2}, v}});
  const std::string before = slurp(p);
  CHECK_THROWS_WITH_AS(dchag::write_safetensors<float>(p, {{"a", {2}, v}, {"a", {2}, v}}),
                       doctest::Contains("duplicate tensor name 'a'"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::write_safetensors<float>(p, {{"__metadata__", {2}, v}}),
                       doctest::Contains("cannot be a tensor name"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::write_safetensors<float>(p, {{"bad\xff", {2}, v}}),
                       doctest::Contains("not valid UTF-8"), dchag::Error);
  {
    // Fails half way: the target keeps its old content and no temporary file is left.
    dchag::SafetensorsWriter w(p, {{"x", "F32", {2}}, {"y", "F64", {3}}}, {});
    w.write("x", v, 2);
    CHECK_THROWS_WITH_AS(w.write("z", v, 2), doctest::Contains("'y' was declared next"),
                         dchag::Error);
    CHECK_THROWS_WITH_AS(w.commit(), doctest::Contains("were never written"), dchag::Error);
  }
  CHECK(slurp(p) == before);
  std::size_t files = 0;
  for (const auto& e : fs::directory_iterator(scratch()))
    files += e.path().filename().string().rfind("atomic.safetensors", 0) == 0;
  CHECK(files == 1);
  CHECK_THROWS_WITH_AS(
      dchag::write_safetensors<float>(path_of("no/such/dir/x.safetensors"), {{"a", {2}, v}}),
      doctest::Contains("x.safetensors': cannot create the temporary file"), dchag::Error);
}

TEST_CASE("safetensors: a flipped data byte fails the checksum; files without checksums read") {
  std::vector<float> a(64);
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = float(i) - 20.f;
  std::vector<double> b = {1.0, -2.5, 3.25};
  const std::string p = path_of("checksum.safetensors");
  dchag::write_safetensors<float>(p, {{"a", {8, 8}, a.data()}}, {{"note", "kept"}});
  {
    const auto f = dchag::SafetensorsFile::read(p);
    CHECK(f.info("a").has_checksum);
    // The checksums are the writer's bookkeeping, not metadata a copy would carry on.
    CHECK(f.metadata().size() == 1);
    CHECK(f.read<float>("a") == a);
    CHECK(f.read<double>("a").size() == a.size());  // the converting path verifies too
  }
  std::string bytes = slurp(p);
  bytes[bytes.size() - 9] ^= 0x10;  // one bit of one value
  spit(p, bytes);
  const auto f = dchag::SafetensorsFile::read(p);  // the header is intact
  CHECK_THROWS_WITH_AS(f.read<float>("a"), doctest::Contains("tensor 'a' fails its checksum"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(f.read<double>("a"), doctest::Contains("the file is corrupt"),
                       dchag::Error);
  // Files of other writers carry no checksum and read as before.
  const std::string plain = file_bytes(
      R"({"d":{"dtype":"F64","shape":[3],"data_offsets":[0,24]}})",
      std::string(reinterpret_cast<const char*>(b.data()), 24));
  const auto g = dchag::SafetensorsFile::from_bytes(plain);
  CHECK_FALSE(g.info("d").has_checksum);
  CHECK(g.read<double>("d") == b);
  CHECK_REFUSED("bad_checksums",
                file_bytes(R"({"__metadata__":{"dchag.fnv1a64":"12"},)"
                           R"("d":{"dtype":"F64","shape":[3],"data_offsets":[0,24]}})",
                           std::string(24, 'x')),
                "comma-separated 16-digit checksums");
  const float v[2] = {1.f, 2.f};
  CHECK_THROWS_WITH_AS(
      dchag::write_safetensors<float>(path_of("reserved.safetensors"), {{"a", {2}, v}},
                                      {{"dchag.fnv1a64", "x"}}),
      doctest::Contains("reserved"), dchag::Error);
}

TEST_CASE("safetensors: what a header may cost is bounded by its size") {
  // A shape of a million ones once cost ~130 bytes per entry; now it is refused at the 65th.
  std::string ones = "1";
  for (int i = 1; i < 1000000; ++i) ones += ",1";
  CHECK_REFUSED("long_shape",
                file_bytes(R"({"a":{"dtype":"F32","shape":[)" + ones + R"(],"data_offsets":[0,4]}})",
                           std::string(4, 'x')),
                "more dimensions than the 64 allowed");
  // 64 dimensions are still fine.
  std::string sixty_four = "1";
  for (int i = 1; i < 64; ++i) sixty_four += ",1";
  const auto f = dchag::SafetensorsFile::from_bytes(file_bytes(
      R"({"a":{"dtype":"F32","shape":[)" + sixty_four + R"(],"data_offsets":[0,4]}})",
      std::string(4, 'x')));
  CHECK(f.info("a").shape.size() == 64);
  // Many empty tensors: one entry each, no tree of JSON values behind them.
  std::string many = "{";
  for (int i = 0; i < 100000; ++i)
    many += (i ? "," : "") + ("\"t" + std::to_string(i) + "\":{\"dtype\":\"F32\",\"shape\":[0],"
                                                          "\"data_offsets\":[0,0]}");
  many += "}";
  CHECK(dchag::SafetensorsFile::from_bytes(file_bytes(many, "")).size() == 100000);
}

#if defined(__unix__) || defined(__APPLE__)
TEST_CASE("safetensors: a FIFO or a directory is refused before it is opened") {
  const std::string fifo = path_of("fifo.safetensors");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  // Opening a FIFO for reading would block until a writer appears.
  CHECK_THROWS_WITH_AS(dchag::SafetensorsFile::read(fifo), doctest::Contains("not a regular file"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::SafetensorsFile::read(scratch().string()),
                       doctest::Contains("not a regular file (a directory)"), dchag::Error);
}

TEST_CASE("safetensors: a header that cannot be written leaves no temporary file") {
  const float v[2] = {1.f, 2.f};
  const std::string p = path_of("full_disk.safetensors");
  // A file size limit makes writes fail as a full disk does (EFBIG instead of ENOSPC).
  struct rlimit old;
  REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = old;
  small.rlim_cur = 4096;
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
  std::string error;
  try {
    dchag::write_safetensors<float>(p, {{"a", {2}, v}}, {{"big", std::string(100000, 'x')}});
  } catch (const dchag::Error& e) {
    error = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);
  CHECK(error.find("writing the header") != std::string::npos);
  std::size_t files = 0;
  for (const auto& e : fs::directory_iterator(scratch()))
    files += e.path().filename().string().rfind("full_disk.safetensors", 0) == 0;
  CHECK(files == 0);
}

TEST_CASE("safetensors: remove_stale_temporaries removes only dead writers' files of this host") {
  const fs::path dir = scratch() / "stale";
  fs::create_directories(dir);
  // A pid that surely belongs to no process: a child that has exited and been reaped.
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) ::_exit(0);
  int status = 0;
  ::waitpid(child, &status, 0);
  const std::string host = dchag::Impl::host_name();
  const std::string dead = std::to_string(child), alive = std::to_string(::getpid());
  const std::vector<std::string> removed_names = {
      "checkpoint.safetensors.tmp." + host + "." + dead + ".1",
      "checkpoint_step4.safetensors.tmp." + dead + ".2"};  // without a host: earlier versions
  const std::vector<std::string> kept_names = {
      "checkpoint.safetensors", "checkpoint.safetensors.tmp." + host + "." + alive + ".1",
      "checkpoint.safetensors.tmp.another-node." + dead + ".1", "notes.tmp." + dead + ".1",
      "checkpoint.safetensors.tmp." + host + ".x.1"};
  for (const auto& n : removed_names) spit((dir / n).string(), "x");
  for (const auto& n : kept_names) spit((dir / n).string(), "x");
  auto removed = dchag::remove_stale_temporaries(dir.string());
  CHECK(removed.size() == removed_names.size());
  for (const auto& n : removed_names) CHECK_FALSE(fs::exists(dir / n));
  for (const auto& n : kept_names) CHECK(fs::exists(dir / n));
  CHECK(dchag::remove_stale_temporaries((dir / "missing").string()).empty());
}
#endif

// ---- fuzzing ------------------------------------------------------------------------------------

namespace {

// Opens the bytes and reads every tensor: anything may fail, but only as a dchag::Error.
// Returns whether it succeeded.
bool open_and_read_all(const std::string& bytes, bool through_file) {
  try {
    const auto f = through_file ? open_bytes("fuzz", bytes)
                                : dchag::SafetensorsFile::from_bytes(bytes, "fuzz buffer");
    for (const auto& t : f.tensors()) {
      if (!dchag::Impl::safetensors_readable(t.dtype)) continue;
      std::vector<double> out(t.elements());
      f.read(t.name, out.data(), out.size());
      (void)f.read<float>(t.name);
    }
    return true;
  } catch (const dchag::Error&) {
    return false;
  }
}

}  // namespace

TEST_CASE("safetensors: seeded mutation fuzzing ends in success or dchag::Error, never a crash") {
  // A valid file with every readable dtype and metadata, written by our writer, plus F16/BF16
  // tensors spliced in by hand.
  std::vector<float> a(12);
  std::vector<double> b(5);
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = float(i) * 0.5f - 2.f;
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = double(i) / 7.0;
  const std::string p = path_of("fuzz_seed.safetensors");
  dchag::write_safetensors<float>(p, {{"blocks.0.w", {3, 4}, a.data()}, {"s", {}, a.data()}},
                                  {{"config", "C=8 D=16"}, {"step", "12"}});
  const std::string written = slurp(p);
  const std::string hand = file_bytes(
      R"({"h":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[3],"data_offsets":[8,14]},"d":{"dtype":"F64","shape":[5],"data_offsets":[14,54]},"__metadata__":{"k":"v"}})",
      u16s({0x3c00, 0xc000, 0x0001, 0x7c00, 0x3f80, 0xc040, 0x4049}) +
          std::string(reinterpret_cast<const char*>(b.data()), 40));
  REQUIRE(open_and_read_all(written, false));
  REQUIRE(open_and_read_all(hand, false));

  std::mt19937_64 rng(20250611);
  auto uniform = [&](std::size_t n) { return n == 0 ? std::size_t(0) : std::size_t(rng() % n); };
  const char tokens[] = "{}[]\",:-0123456789 \\u";
  const int iterations = 4000;
  const auto start = std::chrono::steady_clock::now();
  int ok = 0, refused = 0, done = 0;
  for (int it = 0; it < iterations; ++it) {
    std::string bytes = (it % 2) ? written : hand;
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
    // Half of the mutations aim at the header, where the parser and the validation live.
    const bool header_only = uniform(2) == 0;
    const std::size_t lo = header_only ? 8 : 0;
    const std::size_t hi = header_only ? 8 + std::size_t(n) : bytes.size();
    const int edits = 1 + int(uniform(4));
    for (int e = 0; e < edits && !bytes.empty(); ++e) {
      const std::size_t top = std::min(hi, bytes.size());
      const std::size_t at = top > lo ? lo + uniform(top - lo) : uniform(bytes.size() + 1);
      switch (uniform(7)) {
        case 0:  // flip a bit
          if (at < bytes.size()) bytes[at] = static_cast<char>(bytes[at] ^ (1 << uniform(8)));
          break;
        case 1:  // insert random bytes
          bytes.insert(at, std::string(1 + uniform(4), static_cast<char>(rng())));
          break;
        case 2:  // delete bytes
          if (at < bytes.size()) bytes.erase(at, 1 + uniform(4));
          break;
        case 3:  // truncate
          bytes.resize(uniform(bytes.size() + 1));
          break;
        case 4:  // a JSON token in place of a byte
          if (at < bytes.size()) bytes[at] = tokens[uniform(sizeof tokens - 1)];
          break;
        case 5: {  // a plausible but wrong header length
          const std::uint64_t m = n + uniform(17) - 8;
          if (bytes.size() >= 8) bytes.replace(0, 8, le64(uniform(8) == 0 ? rng() : m));
          break;
        }
        default:  // insert a JSON token
          bytes.insert(at, 1, tokens[uniform(sizeof tokens - 1)]);
          break;
      }
    }
    // Every 16th goes through a real file too (a different source of the same bytes).
    (open_and_read_all(bytes, it % 16 == 0) ? ok : refused) += 1;
    ++done;
    if (std::chrono::steady_clock::now() - start > std::chrono::seconds(8)) break;
  }
  MESSAGE("fuzz: ", done, " mutated files, ", ok, " read fine, ", refused, " refused");
  CHECK(done >= 1000);
  CHECK(refused > 0);
  CHECK(ok > 0);
}
