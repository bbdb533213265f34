#ifndef DCHAG_TRAIN_CHECKPOINT_HPP
#define DCHAG_TRAIN_CHECKPOINT_HPP

// Checkpoints of a ChannelViT (and of its AdamW state) that do not depend on the grid they were
// written on, and that PyTorch reads as a plain state_dict.
//
// The file. One safetensors file (io/safetensors.hpp) holding every parameter under its ClimaX
// name in its LOGICAL (un-sharded) shape, F32 for a float model and F64 for a double one, in
// "natural" name order (blocks.2 before blocks.10), so that the same model gives the same bytes
// whatever grid wrote it. With an optimizer, its moments are in the same file as
// "optimizer.m.{name}" and "optimizer.v.{name}" (logical shapes too): one file means one atomic
// rename, so a checkpoint can never pair weights with the moments of another step. A PyTorch
// user drops the "optimizer." entries before load_state_dict (tests/python/climax_reference.py
// does). __metadata__ holds (all strings):
//   format = "dchag.checkpoint", format_version = "1"
//   config = ModelConfig::describe(), and config.{channels, out_channels, height, width, patch,
//            dim, depth, heads, mlp_ratio, decoder_depth, levels ("4,1"), lead_time ("true" /
//            "false"), seed}: enough to rebuild the model (read_checkpoint_info)
//   aggregator = "none" (levels {1}, the ClimaX baseline) | "linear" | "cross_attention"
//   policy = Policy::name() of the writer (information only: any policy may load the file)
//   scalar = "F32" | "F64" (information only: loading converts), step = the training step
//            given to save_checkpoint
//   with an optimizer: optimizer = "AdamW", optimizer.step_count, and its lr, beta1, beta2, eps
//            and weight_decay (information only: the run's optimizer settings are its own)
// and, as in every file SafetensorsWriter writes, a checksum of each tensor's bytes, which
// loading verifies. Values that are NaN or infinite are refused both ways (NonFinite).
//
// Saving (collective over the model's world). Only the first data-parallel replica is written
// (replicas are identical): each of its ranks contributes the pieces of the partitioned
// parameters it holds, and tp rank 0 the replicated ones. World rank 0 gathers the layout,
// checks that the pieces tile every logical tensor exactly once, writes the header, then
// receives the tensors one at a time in file order (point to point, so no rank ever holds more
// than one logical tensor beyond its own model) and streams them into a temporary file that is
// renamed into place once complete.
//
// Loading (collective over the model's world; any grid, any policy with the same parameter
// names). Every rank reads the file itself and keeps only its own pieces. Everything is checked
// before the model is touched: the configuration in the metadata against the model's (seed
// excepted: the weights replace the initialisation), every tensor present with its logical
// shape, no tensor the model lacks, the optimizer's moments and step count when an optimizer is
// given. The ranks then agree (an all-reduce of who failed, a broadcast of the first failure's
// message), so that a failure anywhere throws the same dchag::Error on every rank, naming the
// file and the tensor, and leaves the model and the optimizer as they were.

#include <mpi.h>

#include <Kokkos_Core.hpp>
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include <dchag/aggregation/cross_attention_aggregator.hpp>
#include <dchag/aggregation/linear_aggregator.hpp>
#include <dchag/core/error.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/view.hpp>
#include <dchag/io/safetensors.hpp>
#include <dchag/kernels/reductions.hpp>
#include <dchag/model/channel_vit.hpp>
#include <dchag/model/config.hpp>
#include <dchag/parallel/agreement.hpp>
#include <dchag/parallel/collectives.hpp>
#include <dchag/parallel/communicator.hpp>
#include <dchag/parallel/process_grid.hpp>
#include <dchag/train/adamw.hpp>

namespace dchag {

// What a checkpoint says about itself (read_checkpoint_info), or what load_checkpoint loaded.
struct CheckpointInfo {
  ModelConfig config;            // as recorded; rebuilds the model
  std::string aggregator;        // "none", "linear" or "cross_attention"
  std::string scalar;            // "F32" or "F64"
  std::int64_t step = 0;         // the training step given to save_checkpoint
  bool has_optimizer = false;    // optimizer moments are in the file
  std::int64_t optimizer_steps = 0;
  std::map<std::string, std::string> metadata;
};

// Whether save_checkpoint and load_checkpoint accept weights or optimizer moments that are NaN
// or infinite. By default they refuse: a diverged last step must not replace a good checkpoint,
// and a file holding such values must not silently poison a run. Allow is for inspecting a
// diverged run on purpose.
enum class NonFinite { Refuse, Allow };

namespace Impl {

constexpr int checkpoint_tag = 0x5afe;

// Keeps the optimizer argument out of template deduction, so that a literal nullptr works.
template <class X>
struct non_deduced {
  using type = X;
};
constexpr const char* checkpoint_format = "dchag.checkpoint";
constexpr const char* checkpoint_m_prefix = "optimizer.m.";
constexpr const char* checkpoint_v_prefix = "optimizer.v.";

inline bool starts_with(const std::string& s, const char* prefix) {
  return s.compare(0, std::char_traits<char>::length(prefix), prefix) == 0;
}

// Names compared with runs of digits as numbers: blocks.2 < blocks.10. Ties (equal numbers
// written differently) fall back to plain comparison, so this is a strict weak order.
inline bool natural_less(const std::string& a, const std::string& b) {
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  std::size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (digit(a[i]) && digit(b[j])) {
      std::size_t i1 = i, j1 = j;
      while (i1 < a.size() && digit(a[i1])) ++i1;
      while (j1 < b.size() && digit(b[j1])) ++j1;
      std::size_t i0 = i, j0 = j;  // skip leading zeros
      while (i0 + 1 < i1 && a[i0] == '0') ++i0;
      while (j0 + 1 < j1 && b[j0] == '0') ++j0;
      if (i1 - i0 != j1 - j0) return i1 - i0 < j1 - j0;
      const int c = a.compare(i0, i1 - i0, b, j0, j1 - j0);
      if (c != 0) return c < 0;
      i = i1;
      j = j1;
    } else {
      if (a[i] != b[j]) return static_cast<unsigned char>(a[i]) < static_cast<unsigned char>(b[j]);
      ++i;
      ++j;
    }
  }
  if (a.size() - i != b.size() - j) return a.size() - i < b.size() - j;
  return a < b;
}

// Calls f(offset in the logical tensor, run length) for each contiguous run of `box` (rows of
// its last dimension), in row-major order: the order the box's values are stored in.
template <class F>
void for_each_box_run(const std::vector<std::size_t>& shape, const LogicalBox& box, F&& f) {
  const std::size_t r = shape.size();
  if (r == 0) {
    f(std::size_t(0), std::size_t(1));
    return;
  }
  for (auto e : box.extents)
    if (e == 0) return;
  std::vector<std::size_t> idx(r, 0);
  for (;;) {
    std::size_t offset = 0;
    for (std::size_t d = 0; d < r; ++d) offset = offset * shape[d] + box.start[d] + idx[d];
    f(offset, box.extents[r - 1]);
    int d = static_cast<int>(r) - 2;
    for (; d >= 0; --d) {
      if (++idx[d] < box.extents[d]) break;
      idx[d] = 0;
    }
    if (d < 0) return;
  }
}

inline std::string exact_number(double x) {
  char text[32];
  std::snprintf(text, sizeof text, "%.17g", x);
  return text;
}

// Strict integer from metadata text: the whole string, optional '-', digits.
inline bool parse_int64(const std::string& s, std::int64_t& out) {
  if (s.empty() || s.size() > 20) return false;
  std::size_t i = s[0] == '-' ? 1 : 0;
  if (i == s.size()) return false;
  long long v = 0;
  for (; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    if (v > (LLONG_MAX - (s[i] - '0')) / 10) return false;
    v = v * 10 + (s[i] - '0');
  }
  out = s[0] == '-' ? -v : v;
  return true;
}

inline std::string levels_text(const std::vector<int>& levels) {
  std::string s;
  for (std::size_t i = 0; i < levels.size(); ++i) s += (i ? "," : "") + std::to_string(levels[i]);
  return s;
}

// The fields of ModelConfig that define the parameters and the function (the seed does not:
// loaded weights replace the initialisation), as metadata text.
inline std::vector<std::pair<std::string, std::string>> config_fields(const ModelConfig& c) {
  return {{"channels", std::to_string(c.channels)},
          {"out_channels", std::to_string(c.out_channels)},
          {"height", std::to_string(c.height)},
          {"width", std::to_string(c.width)},
          {"patch", std::to_string(c.patch)},
          {"dim", std::to_string(c.dim)},
          {"depth", std::to_string(c.depth)},
          {"heads", std::to_string(c.heads)},
          {"mlp_ratio", std::to_string(c.mlp_ratio)},
          {"decoder_depth", std::to_string(c.decoder_depth)},
          {"levels", levels_text(c.levels)},
          {"lead_time", c.lead_time ? "true" : "false"}};
}

// "none" for the ClimaX baseline (no partial level), else the partial aggregator's kind.
template <class T, class ExecSpace, class Policy>
std::string aggregator_name(const ModelConfig& c) {
  if (c.levels.size() <= 1) return "none";
  return Policy::template partial<T, ExecSpace>::name();
}

inline const std::string& require_metadata(const std::map<std::string, std::string>& meta,
                                           const std::string& key, const std::string& label) {
  const auto it = meta.find(key);
  require(it != meta.end(), label, ": no '", key, "' in the metadata; not a dchag checkpoint "
          "(save_checkpoint and tests/python/climax_reference.py write it)");
  return it->second;
}

inline std::int64_t metadata_int(const std::map<std::string, std::string>& meta,
                                 const std::string& key, const std::string& label) {
  const std::string& text = require_metadata(meta, key, label);
  std::int64_t v = 0;
  require(parse_int64(text, v), label, ": metadata '", key, "' is '", text,
          "', not an integer");
  return v;
}

inline ModelConfig config_from_metadata(const std::map<std::string, std::string>& meta,
                                        const std::string& label) {
  auto get_int = [&](const char* field) {
    const std::int64_t v = metadata_int(meta, std::string("config.") + field, label);
    require(v >= INT_MIN && v <= INT_MAX, label, ": metadata 'config.", field, "' = ", v,
            " is out of range");
    return static_cast<int>(v);
  };
  ModelConfig c;
  c.channels = get_int("channels");
  c.out_channels = get_int("out_channels");
  c.height = get_int("height");
  c.width = get_int("width");
  c.patch = get_int("patch");
  c.dim = get_int("dim");
  c.depth = get_int("depth");
  c.heads = get_int("heads");
  c.mlp_ratio = get_int("mlp_ratio");
  c.decoder_depth = get_int("decoder_depth");
  const std::string& levels = require_metadata(meta, "config.levels", label);
  c.levels.clear();
  std::stringstream in(levels);
  std::string item;
  while (std::getline(in, item, ',')) {
    std::int64_t v = 0;
    require(parse_int64(item, v) && v > 0 && v <= INT_MAX, label, ": metadata 'config.levels' = '",
            levels, "' is not a list of positive integers");
    c.levels.push_back(static_cast<int>(v));
  }
  const std::string& lead = require_metadata(meta, "config.lead_time", label);
  require(lead == "true" || lead == "false", label, ": metadata 'config.lead_time' = '", lead,
          "', expected true or false");
  c.lead_time = lead == "true";
  const auto seed = meta.find("config.seed");
  if (seed != meta.end()) {
    std::int64_t v = 0;
    if (parse_int64(seed->second, v) && v >= 0) c.seed = static_cast<std::uint64_t>(v);
  }
  return c;
}

// Refuses a checkpoint of another model, listing every field that differs.
inline void check_checkpoint_config(const std::map<std::string, std::string>& meta,
                                    const std::string& label, const ModelConfig& model,
                                    const std::string& aggregator) {
  std::string differences;
  for (const auto& field : config_fields(model)) {
    const std::string& file = require_metadata(meta, "config." + field.first, label);
    if (file != field.second)
      differences += concat(differences.empty() ? "" : "; ", field.first, " = ", file,
                            " in the file, ", field.second, " in the model");
  }
  const auto agg = meta.find("aggregator");
  if (agg != meta.end() && agg->second != aggregator)
    differences += concat(differences.empty() ? "" : "; ", "aggregator = ", agg->second,
                          " in the file, ", aggregator, " in the model");
  require(differences.empty(), label, ": the checkpoint holds a different model configuration (",
          differences, ")");
}

// One tensor of the file held (partly) by this rank: its logical name and shape, the boxes of
// it this rank holds (stored one after another in `values`).
template <class T, class ExecSpace>
struct CheckpointPiece {
  std::string name;
  std::vector<std::size_t> shape;
  std::vector<LogicalBox> boxes;
  Unmanaged<T*, ExecSpace> values;
};

// A contiguous rank-1 view's values on the host, and back (synchronous: deep_copy fences).
template <class View>
std::vector<typename View::non_const_value_type> to_host_vector(const View& v) {
  using T = typename View::non_const_value_type;
  std::vector<T> out(v.size());
  Kokkos::deep_copy(Kokkos::View<T*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(
                        out.data(), out.size()),
                    v);
  return out;
}

template <class View, class T>
void from_host_vector(const View& v, const std::vector<T>& host) {
  Kokkos::deep_copy(v, Kokkos::View<const T*, Kokkos::HostSpace,
                                    Kokkos::MemoryTraits<Kokkos::Unmanaged>>(host.data(),
                                                                             host.size()));
}

// The layout of one rank's pieces, as text rank 0 can parse: per piece a line with the name,
// then a line "rank dims... boxes start... extents... ...".
template <class T, class ExecSpace>
std::string describe_pieces(const std::vector<CheckpointPiece<T, ExecSpace>>& pieces) {
  std::ostringstream out;
  for (const auto& p : pieces) {
    out << p.name << '\n' << p.shape.size();
    for (auto d : p.shape) out << ' ' << d;
    out << ' ' << p.boxes.size();
    for (const auto& b : p.boxes) {
      for (auto s : b.start) out << ' ' << s;
      for (auto e : b.extents) out << ' ' << e;
    }
    out << '\n';
  }
  return out.str();
}

struct PlannedSource {
  int rank = 0;
  std::vector<LogicalBox> boxes;
  std::size_t count = 0;
};

struct PlannedTensor {
  std::string name;
  std::vector<std::size_t> shape;
  std::vector<PlannedSource> sources;
};

// Rank 0: the tensors of the file in file order, with who holds which part; checks that the
// pieces of every tensor tile it exactly once (anything else is a bug in a layer's pieces).
inline std::vector<PlannedTensor> plan_checkpoint(const std::vector<std::string>& descriptions,
                                                  const std::string& label) {
  std::map<std::string, PlannedTensor> by_name;
  for (std::size_t r = 0; r < descriptions.size(); ++r) {
    std::istringstream in(descriptions[r]);
    std::string name, line;
    while (std::getline(in, name) && std::getline(in, line)) {
      std::istringstream fields(line);
      std::size_t rank = 0, nboxes = 0;
      fields >> rank;
      std::vector<std::size_t> shape(rank);
      for (auto& d : shape) fields >> d;
      fields >> nboxes;
      PlannedSource src;
      src.rank = static_cast<int>(r);
      for (std::size_t b = 0; b < nboxes; ++b) {
        LogicalBox box{std::vector<std::size_t>(rank), std::vector<std::size_t>(rank)};
        for (auto& s : box.start) fields >> s;
        for (auto& e : box.extents) fields >> e;
        src.count += box.size();
        src.boxes.push_back(std::move(box));
      }
      require(!fields.fail(), label, ": internal error: unreadable layout of tensor '", name,
              "' from rank ", r);
      auto& t = by_name[name];
      if (t.name.empty()) {
        t.name = name;
        t.shape = shape;
      }
      // A tensor's first source set its shape (and its name), so sources is never empty here.
      if (t.shape != shape)
        throw Error(concat(label, ": tensor '", name, "' has shape ", shape_text(shape),
                           " on rank ", r, " but ", shape_text(t.shape), " on rank ",
                           t.sources.front().rank));
      t.sources.push_back(std::move(src));
    }
  }
  std::vector<PlannedTensor> plan;
  for (auto& kv : by_name) {
    PlannedTensor& t = kv.second;
    std::size_t n = 1;
    for (auto d : t.shape) n *= d;
    std::vector<unsigned char> covered(n, 0);
    for (const auto& s : t.sources)
      for (const auto& b : s.boxes) {
        for (std::size_t d = 0; d < t.shape.size(); ++d)
          require(b.start[d] + b.extents[d] <= t.shape[d], label, ": tensor '", t.name,
                  "': a piece from rank ", s.rank, " lies outside its shape ",
                  shape_text(t.shape));
        for_each_box_run(t.shape, b, [&](std::size_t offset, std::size_t run) {
          for (std::size_t i = offset; i < offset + run; ++i) {
            require(!covered[i], label, ": tensor '", t.name, "': element ", i,
                    " is held by two ranks' pieces (rank ", s.rank, " and another)");
            covered[i] = 1;
          }
        });
      }
    const auto hole = std::find(covered.begin(), covered.end(), 0);
    require(hole == covered.end(), label, ": tensor '", t.name, "': element ",
            hole - covered.begin(), " of ", n, " is held by no rank");
    plan.push_back(std::move(t));
  }
  std::sort(plan.begin(), plan.end(), [](const PlannedTensor& a, const PlannedTensor& b) {
    return natural_less(a.name, b.name);
  });
  return plan;
}

// Every rank's text at root (collective; the result is empty elsewhere).
inline std::vector<std::string> gather_strings(const Communicator& comm, const std::string& mine,
                                               int root) {
  const char* where = "save_checkpoint";
  const int p = comm.size();
  const bool is_root = comm.rank() == root;
  long long length = static_cast<long long>(mine.size()), total = 0;
  check_mpi(MPI_Allreduce(&length, &total, 1, MPI_LONG_LONG, MPI_SUM, comm.get()),
            "MPI_Allreduce", where);
  require(total <= INT_MAX, "dchag::save_checkpoint: the layout descriptions (", total,
          " bytes) are too large to gather");
  const int n = static_cast<int>(length);
  std::vector<int> lengths(is_root ? p : 0), offsets(is_root ? p : 0);
  check_mpi(MPI_Gather(&n, 1, MPI_INT, lengths.data(), 1, MPI_INT, root, comm.get()),
            "MPI_Gather", where);
  int sum = 0;
  for (int r = 0; r < static_cast<int>(lengths.size()); ++r) {
    offsets[r] = sum;
    sum += lengths[r];
  }
  std::vector<char> all(static_cast<std::size_t>(sum) + 1);
  check_mpi(MPI_Gatherv(mine.data(), n, MPI_CHAR, all.data(), lengths.data(), offsets.data(),
                        MPI_CHAR, root, comm.get()),
            "MPI_Gatherv", where);
  std::vector<std::string> out;
  for (int r = 0; r < static_cast<int>(lengths.size()); ++r)
    out.emplace_back(all.data() + offsets[r], static_cast<std::size_t>(lengths[r]));
  return out;
}

// The logical tensor `name` from the file, reduced to the boxes a rank holds (in its storage
// order); the whole tensor when `boxes` is empty.
template <class T>
std::vector<T> read_pieces(const SafetensorsFile& file, const std::string& name,
                           const std::vector<std::size_t>& shape,
                           const std::vector<LogicalBox>& boxes, std::size_t local_size,
                           const char* what) {
  require(file.contains(name), file.label(), ": ", what, " '", name,
          "' is missing from the checkpoint");
  const SafetensorsInfo& info = file.info(name);
  require(info.shape == shape, file.label(), ": tensor '", name, "' has shape ",
          shape_text(info.shape), " in the checkpoint but ", shape_text(shape), " in the model");
  std::vector<T> full = file.read<T>(name);
  if (boxes.empty()) return full;
  std::vector<T> out;
  out.reserve(local_size);
  for (const auto& b : boxes)
    for_each_box_run(shape, b, [&](std::size_t offset, std::size_t run) {
      out.insert(out.end(), full.begin() + offset, full.begin() + offset + run);
    });
  require(out.size() == local_size, file.label(), ": tensor '", name, "': internal error: ",
          "this rank's pieces hold ", out.size(), " values, its storage ", local_size);
  return out;
}

// The file's names of every parameter of `params` this rank writes, with its storage.
template <class T, class ExecSpace>
std::vector<CheckpointPiece<T, ExecSpace>> checkpoint_pieces(
    const ParameterList<T, ExecSpace>& params, const AdamW<T, ExecSpace>* optimizer,
    const ProcessGrid& grid, const std::string& label) {
  const std::string where = "dchag::save_checkpoint: " + label;
  std::vector<CheckpointPiece<T, ExecSpace>> pieces;
  // The first data-parallel replica writes: its partitioned pieces from every TP rank, its
  // replicated tensors from TP rank 0; sharded tensors from every fsdp rank, others from the
  // first.
  if (grid.dp_rank() != 0) return pieces;
  if (optimizer)
    require(optimizer->has_state(), where, ": the optimizer has no state yet "
            "(it is allocated by its first step or by initialize()); save without it or "
            "initialize it first");
  for (const auto& p : params) {
    require(p.name.find('\n') == std::string::npos && !p.name.empty() &&
                !starts_with(p.name, "optimizer."),
            where, ": parameter name '", p.name, "' cannot be stored");
    if (!p.partitioned && grid.tp_rank() != 0) continue;
    if (!p.sharded && grid.fsdp_rank() != 0) continue;
    require(p.size() <= static_cast<std::size_t>(INT_MAX), where, ": parameter '",
            p.name, "' holds ", p.size(), " values on this rank, more than one MPI message "
            "carries");
    std::vector<LogicalBox> boxes = p.pieces;
    if (boxes.empty()) boxes.push_back(whole_box(p.shape));
    pieces.push_back({p.name, p.shape, boxes, p.value});
    if (!optimizer) continue;
    const auto& s = optimizer->state(p.name);
    require(s.m.size() == p.size() && s.v.size() == p.size(), where, ": the optimizer state of '",
            p.name, "' has ", s.m.size(), " values, the parameter ", p.size());
    pieces.push_back({checkpoint_m_prefix + p.name, p.shape, boxes,
                      Unmanaged<T*, ExecSpace>(s.m.data(), s.m.size())});
    pieces.push_back({checkpoint_v_prefix + p.name, p.shape, boxes,
                      Unmanaged<T*, ExecSpace>(s.v.data(), s.v.size())});
  }
  std::sort(pieces.begin(), pieces.end(),
            [](const CheckpointPiece<T, ExecSpace>& a, const CheckpointPiece<T, ExecSpace>& b) {
              return natural_less(a.name, b.name);
            });
  return pieces;
}

template <class T, class ExecSpace, class Policy>
std::map<std::string, std::string> checkpoint_metadata(const ChannelViT<T, ExecSpace, Policy>& model,
                                                       const AdamW<T, ExecSpace>* optimizer,
                                                       std::int64_t step) {
  const ModelConfig& c = model.config();
  std::map<std::string, std::string> meta;
  meta["format"] = checkpoint_format;
  meta["format_version"] = "1";
  meta["config"] = c.describe();
  for (const auto& f : config_fields(c)) meta["config." + f.first] = f.second;
  meta["config.seed"] = std::to_string(c.seed);
  meta["aggregator"] = aggregator_name<T, ExecSpace, Policy>(c);
  meta["policy"] = Policy::name();
  meta["scalar"] = safetensors_dtype_of<T>();
  meta["step"] = std::to_string(step);
  if (optimizer) {
    const AdamWConfig& a = optimizer->config();
    meta["optimizer"] = "AdamW";
    meta["optimizer.step_count"] = std::to_string(optimizer->step_count());
    meta["optimizer.lr"] = exact_number(a.lr);
    meta["optimizer.beta1"] = exact_number(a.beta1);
    meta["optimizer.beta2"] = exact_number(a.beta2);
    meta["optimizer.eps"] = exact_number(a.eps);
    meta["optimizer.weight_decay"] = exact_number(a.weight_decay);
  }
  return meta;
}

template <class T>
void require_finite(const std::vector<T>& values, const std::string& name,
                    const std::string& label) {
  for (std::size_t i = 0; i < values.size(); ++i)
    require(std::isfinite(values[i]), label, ": tensor '", name, "' holds a value that is not "
            "finite (", values[i], " at element ", i, " of this rank's part): the run that wrote "
            "it had diverged; refusing to load it (pass NonFinite::Allow to load it anyway)");
}

inline std::string what_failed(const std::exception& e, const std::string& path) {
  // dchag::Error messages name the file already; anything else (bad_alloc, ...) gets it here.
  if (dynamic_cast<const Error*>(&e)) return e.what();
  return concat("checkpoint '", path, "': ", e.what());
}

}  // namespace Impl

// Writes `model` (and the moments and step count of `optimizer`, unless null) to `path` as one
// logical safetensors file, with `step` in the metadata. Collective over the model's world;
// throws the same dchag::Error on every rank on failure (the target file is then untouched),
// also when a value to write is NaN or infinite, unless `nonfinite` is NonFinite::Allow.
template <class T, class ExecSpace, class Policy>
void save_checkpoint(const std::string& path, const ChannelViT<T, ExecSpace, Policy>& model,
                     const typename Impl::non_deduced<AdamW<T, ExecSpace>>::type* optimizer,
                     std::int64_t step, NonFinite nonfinite = NonFinite::Refuse) {
  using Piece = Impl::CheckpointPiece<T, ExecSpace>;
  const ProcessGrid& grid = model.grid();
  const Communicator& world = grid.world();
  const bool root = world.rank() == 0;
  const std::string label = "checkpoint '" + path + "'";

  std::vector<Piece> pieces;
  std::string error;
  try {
    Impl::require(step >= 0, "dchag::save_checkpoint: ", label, ": step ", step,
                  " must be >= 0");
    pieces = Impl::checkpoint_pieces(model.parameters(), optimizer, grid, label);
    if (nonfinite == NonFinite::Refuse)
      for (const auto& p : pieces)
        Impl::require(all_finite(ExecSpace(), p.values), "dchag::save_checkpoint: ", label, ": '",
                      p.name, "' holds NaN or infinite values (the training diverged); nothing "
                      "was written, and a file already there keeps its content (pass "
                      "NonFinite::Allow to write such values anyway)");
  } catch (const std::exception& e) {
    error = Impl::what_failed(e, path);
  }
  Impl::agree_on_success(world, error);

  // Rank 0 learns the layout, checks it and starts the file (header first).
  const std::vector<std::string> layouts =
      Impl::gather_strings(world, Impl::describe_pieces(pieces), 0);
  std::vector<Impl::PlannedTensor> plan;
  std::optional<SafetensorsWriter> writer;
  if (root) {
    try {
      plan = Impl::plan_checkpoint(layouts, label);
      std::vector<SafetensorsEntry> entries;
      for (const auto& t : plan)
        entries.push_back({t.name, Impl::safetensors_dtype_of<T>(), t.shape});
      writer.emplace(path, std::move(entries),
                     Impl::checkpoint_metadata(model, optimizer, step));
    } catch (const std::exception& e) {
      error = Impl::what_failed(e, path);
    }
  }
  Impl::agree_on_success(world, error);

  // The tensors, one at a time in file order. Each rank sends its pieces in that same order,
  // so rank 0's next expected message from a rank is always the one that rank sends next.
  // Nothing may stop the exchange half way, or a rank would wait forever: a rank that cannot
  // stage a piece sends an empty message instead (rank 0 sees the short count), and rank 0
  // keeps receiving after a failure of its own, writing nothing more.
  const MPI_Datatype type = Impl::MpiType<T>::get();
  if (!root) {
    for (const auto& p : pieces) {
      std::vector<T> host;
      if (error.empty()) {
        try {
          host = Impl::to_host_vector(p.values);
        } catch (const std::exception& e) {
          error = Impl::what_failed(e, path);
        }
      }
      Impl::check_mpi(MPI_Send(host.data(), static_cast<int>(host.size()), type, 0,
                               Impl::checkpoint_tag, world.get()),
                      "MPI_Send", "save_checkpoint");
    }
  } else {
    std::map<std::string, const Piece*> own;
    for (const auto& p : pieces) own[p.name] = &p;
    auto fail = [&](const std::string& what) {
      if (error.empty()) error = what;
      writer.reset();  // removes the temporary file
    };
    for (const auto& t : plan) {
      std::size_t n = 1;
      for (auto d : t.shape) n *= d;
      std::vector<T> full, part;
      try {
        if (writer) full.resize(n);
      } catch (const std::exception& e) {
        fail(Impl::what_failed(e, path));
      }
      for (const auto& s : t.sources) {
        bool complete = true;
        try {
          if (s.rank == 0) {
            part = Impl::to_host_vector(own.at(t.name)->values);
          } else {
            part.resize(s.count);
            MPI_Status status;
            Impl::check_mpi(MPI_Recv(part.data(), static_cast<int>(s.count), type, s.rank,
                                     Impl::checkpoint_tag, world.get(), &status),
                            "MPI_Recv", "save_checkpoint");
            int received = 0;
            Impl::check_mpi(MPI_Get_count(&status, type, &received), "MPI_Get_count",
                            "save_checkpoint");
            complete = received == static_cast<int>(s.count);
          }
        } catch (const Error&) {
          throw;  // MPI itself failed: nothing sensible is left to do
        } catch (const std::exception& e) {
          fail(Impl::what_failed(e, path));
          continue;
        }
        if (!complete) {
          fail(Impl::concat(label, ": rank ", s.rank, " could not send its part of tensor '",
                            t.name, "'"));
          continue;
        }
        if (!writer) continue;
        std::size_t at = 0;
        for (const auto& b : s.boxes)
          Impl::for_each_box_run(t.shape, b, [&](std::size_t offset, std::size_t run) {
            std::copy(part.begin() + at, part.begin() + at + run, full.begin() + offset);
            at += run;
          });
      }
      if (!writer) continue;
      try {
        writer->write(t.name, full.data(), n);
      } catch (const std::exception& e) {
        fail(Impl::what_failed(e, path));
      }
    }
  }
  // A sender's failure first: its own message says what went wrong, where rank 0 only saw a
  // short message. The file is renamed into place only when every rank delivered.
  Impl::agree_on_success(world, root ? std::string() : error);
  if (root && writer) {
    try {
      writer->commit();
    } catch (const std::exception& e) {
      error = Impl::what_failed(e, path);
    }
  }
  writer.reset();
  Impl::agree_on_success(world, root ? error : std::string());
}

// The model alone.
template <class T, class ExecSpace, class Policy>
void save_checkpoint(const std::string& path, const ChannelViT<T, ExecSpace, Policy>& model,
                     std::int64_t step = 0, NonFinite nonfinite = NonFinite::Refuse) {
  save_checkpoint(path, model, static_cast<const AdamW<T, ExecSpace>*>(nullptr), step, nonfinite);
}

namespace Impl {
inline CheckpointInfo checkpoint_info(const SafetensorsFile& file) {
  const auto& meta = file.metadata();
  const std::string& label = file.label();
  const std::string& format = require_metadata(meta, "format", label);
  require(format == checkpoint_format, label, ": metadata 'format' is '", format, "', not '",
          checkpoint_format, "'");
  CheckpointInfo info;
  info.config = config_from_metadata(meta, label);
  try {
    info.config.validate();
  } catch (const Error& e) {
    throw Error(concat(label, ": the configuration it records is not a valid model: ", e.what()));
  }
  const auto agg = meta.find("aggregator");
  info.aggregator = agg != meta.end() ? agg->second : "none";
  const auto scalar = meta.find("scalar");
  info.scalar = scalar != meta.end() ? scalar->second : "";
  info.step = meta.count("step") ? metadata_int(meta, "step", label) : 0;
  info.has_optimizer = meta.count("optimizer.step_count") != 0;
  if (info.has_optimizer) info.optimizer_steps = metadata_int(meta, "optimizer.step_count", label);
  info.metadata = meta;
  return info;
}
}  // namespace Impl

// What the checkpoint at `path` holds, from its header (not collective; reads no tensor data).
inline CheckpointInfo read_checkpoint_info(const std::string& path) {
  return Impl::checkpoint_info(SafetensorsFile::read(path));
}

// Loads `path` into `model` (and, unless null, the moments and step count into `optimizer`,
// allocating its state if it has none). Collective over the model's world. On any failure on
// any rank, every rank throws the same dchag::Error and nothing was changed: a value that is
// NaN or infinite is such a failure unless `nonfinite` is NonFinite::Allow, and so is a tensor
// whose bytes fail the checksum the file records.
template <class T, class ExecSpace, class Policy>
CheckpointInfo load_checkpoint(
    const std::string& path, ChannelViT<T, ExecSpace, Policy>& model,
    typename Impl::non_deduced<AdamW<T, ExecSpace>>::type* optimizer = nullptr,
    NonFinite nonfinite = NonFinite::Refuse) {
  const Communicator& world = model.grid().world();
  const ParameterList<T, ExecSpace> params = model.parameters();
  std::vector<std::vector<T>> values(params.size()), ms, vs;
  std::vector<std::string> file_names;  // the file's model tensors, sorted
  std::vector<std::string> extra;       // names no rank can own (optimizer entries)
  CheckpointInfo info;
  std::string error;
  std::string label = "checkpoint '" + path + "'";
  try {
    const SafetensorsFile file = SafetensorsFile::read(path);
    label = file.label();
    info = Impl::checkpoint_info(file);
    Impl::check_checkpoint_config(file.metadata(), label, model.config(),
                                  Impl::aggregator_name<T, ExecSpace, Policy>(model.config()));
    for (std::size_t i = 0; i < params.size(); ++i) {
      const auto& p = params[i];
      values[i] = Impl::read_pieces<T>(file, p.name, p.shape, p.pieces, p.size(), "parameter");
      if (nonfinite == NonFinite::Refuse) Impl::require_finite(values[i], p.name, label);
    }
    if (optimizer) {
      Impl::require(info.has_optimizer, label, ": the checkpoint holds no optimizer state "
                    "(it was saved without an optimizer); load without one");
      Impl::require(info.optimizer_steps >= 0, label, ": optimizer.step_count = ",
                    info.optimizer_steps, " is negative");
      if (optimizer->has_state()) {
        Impl::require(optimizer->state_names().size() == params.size(), label,
                      ": the optimizer given holds state for ", optimizer->state_names().size(),
                      " parameters but the model has ", params.size());
        for (const auto& p : params)
          Impl::require(optimizer->state(p.name).m.size() == p.size(), label,
                        ": the optimizer given holds state of another size for '", p.name, "'");
      }
      ms.resize(params.size());
      vs.resize(params.size());
      for (std::size_t i = 0; i < params.size(); ++i) {
        const auto& p = params[i];
        ms[i] = Impl::read_pieces<T>(file, Impl::checkpoint_m_prefix + p.name, p.shape, p.pieces,
                                     p.size(), "optimizer moment");
        vs[i] = Impl::read_pieces<T>(file, Impl::checkpoint_v_prefix + p.name, p.shape, p.pieces,
                                     p.size(), "optimizer moment");
        if (nonfinite == NonFinite::Refuse) {
          Impl::require_finite(ms[i], Impl::checkpoint_m_prefix + p.name, label);
          Impl::require_finite(vs[i], Impl::checkpoint_v_prefix + p.name, label);
        }
      }
    }
    std::set<std::string> model_names;
    for (const auto& n : file.names())
      if (!Impl::starts_with(n, "optimizer.")) model_names.insert(n);
    for (const auto& n : file.names()) {
      if (!optimizer || !Impl::starts_with(n, "optimizer.")) continue;
      const bool moment = Impl::starts_with(n, Impl::checkpoint_m_prefix) ||
                          Impl::starts_with(n, Impl::checkpoint_v_prefix);
      if (!moment || !model_names.count(n.substr(std::string(Impl::checkpoint_m_prefix).size())))
        extra.push_back(n);
    }
    file_names.assign(model_names.begin(), model_names.end());
    std::sort(file_names.begin(), file_names.end(), Impl::natural_less);
  } catch (const std::exception& e) {
    error = Impl::what_failed(e, path);
  }
  Impl::agree_on_success(world, error);

  // Tensors no rank of the model holds. Every rank read the same file (checked), so the
  // verdict below is the same everywhere.
  std::string joined;
  for (const auto& n : file_names) joined += n + '\n';
  check_agreement(world, "the tensor list of " + label + " as each rank read it", joined);
  std::vector<unsigned char> held(file_names.size(), 0);
  {
    std::map<std::string, std::size_t> index;
    for (std::size_t i = 0; i < file_names.size(); ++i) index[file_names[i]] = i;
    for (const auto& p : params) held[index.at(p.name)] = 1;
  }
  if (world.size() > 1 && !held.empty())
    Impl::check_mpi(MPI_Allreduce(MPI_IN_PLACE, held.data(), static_cast<int>(held.size()),
                                  MPI_UNSIGNED_CHAR, MPI_MAX, world.get()),
                    "MPI_Allreduce", "load_checkpoint");
  for (std::size_t i = 0; i < held.size(); ++i)
    if (!held[i]) extra.push_back(file_names[i]);
  if (!extra.empty()) {
    std::string list;
    for (std::size_t i = 0; i < extra.size() && i < 8; ++i)
      list += (i ? ", '" : "'") + extra[i] + "'";
    if (extra.size() > 8) list += Impl::concat(", ... (", extra.size(), " in all)");
    throw Error(Impl::concat(label, ": the checkpoint holds ", extra.size(),
                             " tensor(s) the model does not have: ", list,
                             " (another model or aggregator?)"));
  }

  // Everything checked on every rank: now, and only now, the model changes.
  for (std::size_t i = 0; i < params.size(); ++i) Impl::from_host_vector(params[i].value, values[i]);
  if (optimizer) {
    if (!optimizer->has_state()) optimizer->initialize(params);
    for (std::size_t i = 0; i < params.size(); ++i) {
      const auto& s = optimizer->state(params[i].name);
      Impl::from_host_vector(Unmanaged<T*, ExecSpace>(s.m.data(), s.m.size()), ms[i]);
      Impl::from_host_vector(Unmanaged<T*, ExecSpace>(s.v.data(), s.v.size()), vs[i]);
    }
    optimizer->set_step_count(info.optimizer_steps);
  }
  return info;
}

}  // namespace dchag

#endif
