#ifndef DCHAG_TRAIN_CHECKPOINT_PLAN_HPP
#define DCHAG_TRAIN_CHECKPOINT_PLAN_HPP

// Which values of a checkpoint each rank holds, and who writes what. A checkpoint stores every
// tensor in its logical (un-sharded) shape; a rank holds boxes of some of them (tensor-parallel
// pieces, fsdp slices). Saving: each rank lists the pieces it contributes (the first
// data-parallel replica only, replicated tensors from one rank), rank 0 parses every rank's
// list into a plan, checking that the pieces tile each tensor exactly once, in the file's
// "natural" name order. Loading: each rank cuts its boxes out of the logical tensors it reads.
// No communication here: train/checkpoint.hpp moves the data.

#include <algorithm>
#include <climits>
#include <cstddef>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <dchag/core/error.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/scalar_traits.hpp>
#include <dchag/core/view.hpp>
#include <dchag/io/safetensors_format.hpp>
#include <dchag/io/safetensors_reader.hpp>
#include <dchag/parallel/process_grid.hpp>
#include <dchag/train/adamw.hpp>

namespace dchag {

namespace Impl {

constexpr const char* checkpoint_m_prefix = "optimizer.m.";
constexpr const char* checkpoint_v_prefix = "optimizer.v.";
// The master weights of an optimizer of 16-bit parameters (F32, like its moments).
constexpr const char* checkpoint_master_prefix = "optimizer.master.";

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

// One tensor of the file held (partly) by this rank: its logical name and shape, the boxes of
// it this rank holds (stored one after another in `values`).
template <class T, class ExecSpace>
struct CheckpointPiece {
  std::string name;
  std::vector<std::size_t> shape;
  std::vector<LogicalBox> boxes;
  Unmanaged<T*, ExecSpace> values;           // a parameter's (empty for optimizer state)
  Unmanaged<master_t<T>*, ExecSpace> state;  // optimizer state's (master_t<T>: float for bf16)
  bool optimizer = false;
};

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
    pieces.push_back({p.name, p.shape, boxes, p.value, {}, false});
    if (!optimizer) continue;
    const auto& s = optimizer->state(p.name);
    require(s.m.size() == p.size() && s.v.size() == p.size(), where, ": the optimizer state of '",
            p.name, "' has ", s.m.size(), " values, the parameter ", p.size());
    using W = master_t<T>;
    pieces.push_back({checkpoint_m_prefix + p.name, p.shape, boxes, {},
                      Unmanaged<W*, ExecSpace>(s.m.data(), s.m.size()), true});
    pieces.push_back({checkpoint_v_prefix + p.name, p.shape, boxes, {},
                      Unmanaged<W*, ExecSpace>(s.v.data(), s.v.size()), true});
    if constexpr (AdamW<T, ExecSpace>::has_master)
      pieces.push_back({checkpoint_master_prefix + p.name, p.shape, boxes, {},
                        Unmanaged<W*, ExecSpace>(s.master.data(), s.master.size()), true});
  }
  std::sort(pieces.begin(), pieces.end(),
            [](const CheckpointPiece<T, ExecSpace>& a, const CheckpointPiece<T, ExecSpace>& b) {
              return natural_less(a.name, b.name);
            });
  return pieces;
}

}  // namespace Impl

}  // namespace dchag

#endif
