// libFuzzer target for everything that reads untrusted checkpoint bytes: the safetensors
// reader (from memory and from a file) and load_checkpoint on a small D-CHAG model with AdamW.
//
//   fuzz_checkpoint [libFuzzer flags] [corpus dirs]   fuzz (scripts/fuzz.sh builds and runs it)
//   fuzz_checkpoint --write-seeds DIR                 write the seed corpus (tests/fuzz/corpus)
//   DCHAG_FUZZ_VERBOSE=1 fuzz_checkpoint FILE...      replay inputs, saying what refused each
//
// A dchag::Error is the expected answer to bad input. Any other exception, a sanitizer report
// or a broken invariant (checked with __builtin_trap) is a bug.
#include <dchag/io/safetensors.hpp>
#include <dchag/model/channel_vit.hpp>
#include <dchag/train/adamw.hpp>
#include <dchag/train/checkpoint.hpp>

#include <Kokkos_Core.hpp>
#include <mpi.h>

#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace dchag_fuzz {

namespace fs = std::filesystem;
using Space = Kokkos::DefaultHostExecutionSpace;
using Model = dchag::ChannelViT<float, Space, dchag::DistributedChannels<dchag::LinearAggregator>>;
using Optimizer = dchag::AdamW<float, Space>;

dchag::ModelConfig tiny_config() {
  dchag::ModelConfig c;
  c.channels = 2;
  c.height = c.width = 8;
  c.patch = 4;
  c.dim = 8;
  c.depth = 1;
  c.heads = 2;
  // Half the MLP of the default: the checkpoint (and so every seed) stays a few kilobytes.
  c.mlp_ratio = 2;
  c.levels = {2, 1};
  c.seed = 7;
  return c;
}

struct State {
  std::unique_ptr<Model> model;
  std::unique_ptr<Optimizer> optimizer;
  std::string dir;   // private to this process: parallel fuzzing jobs must not share files
  std::string input; // where each input is written for load_checkpoint
};

State* state = nullptr;

// To check that a seed reaches the check it was written for.
bool verbose = false;

void note(const char* stage, const char* what) {
  if (verbose) std::fprintf(stderr, "  %s: %s\n", stage, what);
}

std::string scratch_directory() {
  std::vector<std::string> bases;
  bases.push_back("/dev/shm");  // tmpfs: one write and one read per input must not hit a disk
  if (const char* t = std::getenv("TMPDIR")) bases.push_back(t);
  bases.push_back("/tmp");
  for (const auto& b : bases) {
    std::string tmpl = b + "/dchag_fuzz_XXXXXX";
    if (char* made = mkdtemp(&tmpl[0])) return made;
  }
  std::fprintf(stderr, "fuzz_checkpoint: cannot create a scratch directory\n");
  std::exit(1);
}

void shut_down() {
  if (!state) return;
  // Views first: Kokkos must still be initialised when they are freed.
  state->optimizer.reset();
  state->model.reset();
  std::error_code ec;
  fs::remove_all(state->dir, ec);
  delete state;
  state = nullptr;
  Kokkos::finalize();
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void start_up(const char* program) {
  // OpenMPI installs handlers for these signals, and libFuzzer never replaces a handler that is
  // already there: a crash would print OpenMPI's backtrace and leave no reproducer. The
  // sanitizers' handlers (installed before main) are put back.
  const int crash_signals[] = {SIGABRT, SIGBUS, SIGFPE, SIGSEGV, SIGILL};
  struct sigaction saved[std::size(crash_signals)];
  for (std::size_t i = 0; i < std::size(crash_signals); ++i)
    sigaction(crash_signals[i], nullptr, &saved[i]);
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) MPI_Init(nullptr, nullptr);
  for (std::size_t i = 0; i < std::size(crash_signals); ++i)
    sigaction(crash_signals[i], &saved[i], nullptr);
  // Kokkos must not see libFuzzer's flags.
  int argc = 1;
  static std::string name = program ? program : "fuzz_checkpoint";
  char* argv[] = {&name[0], nullptr};
  Kokkos::initialize(argc, argv);
  verbose = std::getenv("DCHAG_FUZZ_VERBOSE") != nullptr;
  state = new State;
  state->dir = scratch_directory();
  state->input = state->dir + "/input.safetensors";
  state->model = std::make_unique<Model>(tiny_config(), dchag::ProcessGrid::single());
  // State allocated up front, so that every input meets the same optimizer whatever came before.
  state->optimizer = std::make_unique<Optimizer>(state->model->parameters());
  std::atexit(shut_down);
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void spit(const std::string& path, const std::string& bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size() || std::fclose(f) != 0) {
    std::fprintf(stderr, "fuzz_checkpoint: cannot write '%s'\n", path.c_str());
    std::abort();
  }
}

std::uint64_t header_length(const std::string& bytes) {
  return dchag::Impl::load_le<std::uint64_t>(reinterpret_cast<const unsigned char*>(bytes.data()));
}

bool same_value(double a, double b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

// ---- one input ----------------------------------------------------------------------------

struct ReaderVerdict {
  bool valid = false;          // the bytes are a valid safetensors file
  bool has_optimizer = false;  // its metadata says it holds optimizer state
};

ReaderVerdict exercise_reader(const std::string& bytes) {
  std::optional<dchag::SafetensorsFile> parsed;
  try {
    parsed.emplace(dchag::SafetensorsFile::from_bytes(bytes, "fuzz input"));
  } catch (const dchag::Error& e) {
    note("reader", e.what());
    return {};
  }
  const dchag::SafetensorsFile& file = *parsed;

  std::uint64_t covered = 0;
  for (const auto& t : file.tensors()) {
    const dchag::SafetensorsInfo& again = file.info(t.name);
    if (&again != &t) __builtin_trap();
    // The validated ranges tile the data section in file order.
    if (t.begin != covered || t.end < t.begin) __builtin_trap();
    covered = t.end;
    // Reading may still refuse (a checksum that does not match), but then for both scalars.
    std::vector<float> f;
    std::vector<double> d;
    bool read_f = false, read_d = false;
    try {
      f = file.read<float>(t.name);
      read_f = true;
    } catch (const dchag::Error& e) {
      note("read as float", e.what());
    }
    try {
      d = file.read<double>(t.name);
      read_d = true;
    } catch (const dchag::Error& e) {
      note("read as double", e.what());
    }
    if (read_f != read_d) __builtin_trap();
    // Integer and 8-bit float tensors are validated but never read as floating point.
    if (read_f && !dchag::Impl::safetensors_readable(t.dtype)) __builtin_trap();
    if (!read_f) continue;
    if (f.size() != t.elements() || d.size() != t.elements()) __builtin_trap();
    // Every readable dtype is exact in double, so float and double reads agree.
    for (std::size_t i = 0; i < f.size(); ++i)
      if (!same_value(f[i], static_cast<float>(d[i]))) __builtin_trap();
  }
  if (file.size() != file.tensors().size()) __builtin_trap();
  if (covered != bytes.size() - 8 - header_length(bytes)) __builtin_trap();
  try {
    (void)dchag::Impl::checkpoint_info(file);
    note("checkpoint info", "ok");
  } catch (const dchag::Error& e) {
    note("checkpoint info", e.what());
  }
  return {true, file.metadata().count("optimizer.step_count") != 0};
}

bool try_load(Optimizer* optimizer) {
  try {
    const dchag::CheckpointInfo info =
        dchag::load_checkpoint(state->input, *state->model, optimizer);
    // Loading checked every field of the configuration against the model's.
    if (dchag::Impl::config_fields(info.config) !=
        dchag::Impl::config_fields(state->model->config()))
      __builtin_trap();
    note(optimizer ? "load with optimizer" : "load without optimizer", "ok");
    return true;
  } catch (const dchag::Error& e) {
    note(optimizer ? "load with optimizer" : "load without optimizer", e.what());
    return false;
  }
}

// ---- the seed corpus --------------------------------------------------------------------------

struct Split {
  std::string header, data;
};

Split split(const std::string& bytes) {
  const std::uint64_t n = header_length(bytes);
  return {bytes.substr(8, n), bytes.substr(8 + n)};
}

std::string assemble(const std::string& header, const std::string& data, std::uint64_t length) {
  unsigned char n[8];
  dchag::Impl::store_le<std::uint64_t>(length, n);
  return std::string(reinterpret_cast<const char*>(n), 8) + header + data;
}

std::string assemble(const std::string& header, const std::string& data = std::string()) {
  return assemble(header, data, header.size());
}

std::string replace_first(std::string s, const std::string& from, const std::string& to) {
  const auto at = s.find(from);
  if (at == std::string::npos) throw std::logic_error("seed edit: '" + from + "' not found");
  return s.replace(at, from.size(), to);
}

// The same data under an edited header.
std::string edit_header(const std::string& bytes, const std::string& from, const std::string& to) {
  const Split s = split(bytes);
  return assemble(replace_first(s.header, from, to), s.data);
}

std::string float_bytes(std::initializer_list<float> values) {
  std::string out;
  for (float v : values) {
    std::uint32_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    unsigned char b[4];
    dchag::Impl::store_le(bits, b);
    out.append(reinterpret_cast<const char*>(b), 4);
  }
  return out;
}

// A checkpoint as values, to re-encode with tensors removed, added, reshaped or retyped.
struct Decoded {
  struct Tensor {
    std::string name;
    std::vector<std::size_t> shape;
    std::vector<double> values;
  };
  std::vector<Tensor> tensors;
  std::map<std::string, std::string> metadata;

  void erase(const std::string& name) {
    for (auto it = tensors.begin(); it != tensors.end(); ++it)
      if (it->name == name) {
        tensors.erase(it);
        return;
      }
    throw std::logic_error("seed edit: no tensor '" + name + "'");
  }
};

Decoded decode(const std::string& bytes) {
  const auto file = dchag::SafetensorsFile::from_bytes(bytes);
  Decoded d;
  for (const auto& t : file.tensors())
    d.tensors.push_back({t.name, t.shape, file.read<double>(t.name)});
  d.metadata = file.metadata();
  return d;
}

template <class T>
std::string encode(const Decoded& d) {
  std::vector<std::vector<T>> values;
  std::vector<dchag::SafetensorsTensor<T>> list;
  for (const auto& t : d.tensors) values.emplace_back(t.values.begin(), t.values.end());
  for (std::size_t i = 0; i < d.tensors.size(); ++i)
    list.push_back({d.tensors[i].name, d.tensors[i].shape, values[i].data()});
  // The writer records fresh checksums of its own and refuses to copy the old ones.
  auto metadata = d.metadata;
  metadata.erase(dchag::Impl::safetensors_checksum_key);
  const std::string path = state->dir + "/encoded.safetensors";
  dchag::write_safetensors<T>(path, list, metadata);
  return slurp(path);
}

std::string nested(int depth) {
  return "{\"__metadata__\":" + std::string(depth, '[') + std::string(depth, ']') + "}";
}

std::vector<std::pair<std::string, std::string>> make_seeds() {
  Model& model = *state->model;
  Optimizer& optimizer = *state->optimizer;
  // Moments that differ from the zero initialisation, so a loader mixing them up is visible.
  for (const auto& p : model.parameters()) {
    Kokkos::deep_copy(optimizer.state(p.name).m, 0.25f);
    Kokkos::deep_copy(optimizer.state(p.name).v, 0.0625f);
  }
  optimizer.set_step_count(3);
  const std::string path = state->dir + "/seed.safetensors";
  dchag::save_checkpoint(path, model, &optimizer, 3);
  const std::string full = slurp(path);
  dchag::save_checkpoint(path, model, 3);
  const std::string plain = slurp(path);
  const Split parts = split(plain);
  const std::string first_param = decode(plain).tensors.front().name;

  std::vector<std::pair<std::string, std::string>> seeds;
  auto add = [&](const std::string& name, const std::string& bytes) {
    seeds.emplace_back(name, bytes);
  };

  add("valid_with_optimizer", full);
  add("valid_model_only", plain);
  add("valid_as_f64", encode<double>(decode(plain)));
  // Every readable dtype and a few that are not, in one small valid file.
  add("valid_mixed_dtypes",
      assemble("{\"__metadata__\":{\"format\":\"dchag.checkpoint\"},"
               "\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]},"
               "\"b\":{\"dtype\":\"BF16\",\"shape\":[2,1],\"data_offsets\":[4,8]},"
               "\"c\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[8,16]},"
               "\"d\":{\"dtype\":\"BOOL\",\"shape\":[0,7],\"data_offsets\":[16,16]},"
               "\"e\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[16,24]}}",
               std::string("\x00\x3c\x01\x80\x80\x3f\x80\x7f", 8) + std::string(8, '\x01') +
                   std::string("\x00\x00\x00\x00\x00\x00\xf8\x7f", 8)));

  // The checkpoint's metadata without its tensors: small seeds for the metadata checks.
  Decoded metadata_only = decode(plain);
  metadata_only.tensors.clear();
  const std::string meta = encode<float>(metadata_only);
  const Split meta_parts = split(meta);
  const std::string one_tensor =
      assemble("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
               float_bytes({1, 2}));

  add("truncated_header", plain.substr(0, 8 + parts.header.size() / 2));
  add("truncated_data", plain.substr(0, plain.size() - 6));
  add("header_length_past_end", assemble(meta_parts.header, "", meta.size()));
  add("header_length_absurd", assemble(meta_parts.header, "", std::uint64_t(1) << 40));
  add("bad_json", edit_header(meta, "\"dchag.checkpoint\"", "dchag.checkpoint,"));
  add("dtype_unknown", edit_header(one_tensor, "\"F32\"", "\"F31\""));
  add("dtype_size_mismatch", edit_header(one_tensor, "\"F32\"", "\"F64\""));
  add("dtype_unreadable", edit_header(plain, "\"dtype\":\"F32\"", "\"dtype\":\"I32\""));
  add("shape_offset_mismatch", edit_header(plain, "\"shape\":[", "\"shape\":[2,"));
  add("overlapping_offsets",
      assemble("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"y\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               float_bytes({1, 2, 3})));
  add("gap_and_trailing_bytes",
      assemble("{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"y\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
               float_bytes({1, 2, 3, 4})));

  Decoded non_finite = decode(plain);
  auto& poisoned = non_finite.tensors.back().values;
  poisoned.at(0) = std::nan("");
  poisoned.at(1) = INFINITY;
  poisoned.at(2) = -INFINITY;
  add("non_finite_values", encode<float>(non_finite));

  add("config_dim_differs", edit_header(plain, "\"config.dim\":\"8\"", "\"config.dim\":\"16\""));
  add("config_levels_garbled",
      edit_header(meta, "\"config.levels\":\"2,1\"", "\"config.levels\":\"2,,-1\""));
  add("format_differs", edit_header(meta, "\"format\":\"dchag.checkpoint\"",
                                    "\"format\":\"dchag.checkpoinT\""));

  Decoded missing = decode(plain);
  missing.erase(first_param);
  Decoded extra = decode(plain);
  extra.tensors.push_back(extra.tensors.front());
  extra.tensors.back().name = "blocks.9." + first_param;
  Decoded reshaped = decode(plain);
  for (auto& t : reshaped.tensors)
    if (t.shape.size() >= 2) {
      t.shape = {t.values.size()};
      break;
    }
  add("tensor_missing", encode<float>(missing));
  add("tensor_extra", encode<float>(extra));
  add("tensor_reshaped", encode<float>(reshaped));

  Decoded no_moment = decode(full);
  no_moment.erase("optimizer.v." + first_param);
  add("optimizer_moment_missing", encode<float>(no_moment));

  add("unicode_escapes",
      assemble("{\"__metadata__\":{\"k\\u00e9y\":\"\\ud83d\\ude00 \\\" \\\\ \\/ \\b\\f\\n\\r\\t\","
               "\"\xe2\x82\xac\":\"\xf0\x9f\x98\x80\"},"
               "\"t\\u0041\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}  \n",
               float_bytes({1})));
  add("lone_surrogate_and_bad_utf8",
      assemble("{\"__metadata__\":{\"a\":\"\\udc00\",\"\xc0\x80\":\"\xed\xa0\x80\"}}"));
  add("deep_nesting", assemble(nested(80)));
  add("deep_nesting_in_shape",
      assemble("{\"t\":{\"dtype\":\"F32\",\"shape\":" + std::string(40, '[') + "1" +
               std::string(40, ']') + ",\"data_offsets\":[0,4]}}",
               float_bytes({1})));
  add("long_shape", assemble("{\"t\":{\"dtype\":\"F32\",\"shape\":[" +
                                 [] {
                                   std::string s = "1";
                                   for (int i = 1; i < 64; ++i) s += ",1";
                                   return s;
                                 }() +
                                 "],\"data_offsets\":[0,4]}}",
                             float_bytes({5})));
  add("shape_overflow",
      assemble("{\"t\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296,16],"
               "\"data_offsets\":[0,18446744073709551615]},"
               "\"u\":{\"dtype\":\"F32\",\"shape\":[0,18446744073709551615],"
               "\"data_offsets\":[0,0]}}"));
  add("duplicate_names",
      assemble("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
               float_bytes({1, 2})));
  add("tiny", std::string("\x05\x00\x00", 3));
  return seeds;
}

void write_seeds(const std::string& dir) {
  fs::create_directories(dir);
  std::size_t total = 0;
  const auto seeds = make_seeds();
  for (const auto& s : seeds) {
    spit(dir + "/" + s.first, s.second);
    total += s.second.size();
  }
  std::printf("fuzz_checkpoint: wrote %zu seeds (%zu bytes) to %s\n", seeds.size(), total,
              dir.c_str());
}

}  // namespace dchag_fuzz

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  dchag_fuzz::start_up(*argc > 0 ? (*argv)[0] : nullptr);
  for (int i = 1; i < *argc; ++i)
    if (std::strcmp((*argv)[i], "--write-seeds") == 0) {
      if (i + 1 >= *argc) {
        std::fprintf(stderr, "usage: %s --write-seeds DIR\n", (*argv)[0]);
        std::exit(2);
      }
      dchag_fuzz::write_seeds((*argv)[i + 1]);
      std::exit(0);
    }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace dchag_fuzz;
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  const ReaderVerdict parsed = exercise_reader(bytes);
  spit(state->input, bytes);
  // A load reads the whole file, most of the cost of an execution, so one is made: with the
  // optimizer when the file claims optimizer state, without it otherwise.
  const bool with_optimizer = parsed.has_optimizer || !parsed.valid;
  const bool loaded = try_load(with_optimizer ? state->optimizer.get() : nullptr);
  // Without an optimizer the loader checks a subset of what it checks with one.
  if (loaded && with_optimizer && !try_load(nullptr)) __builtin_trap();
  // The file reader and the memory reader must agree on what is a valid file.
  if (loaded && !parsed.valid) __builtin_trap();
  return 0;
}
