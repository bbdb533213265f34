#ifndef DCHAG_TRAIN_PARAMETER_TABLE_HPP
#define DCHAG_TRAIN_PARAMETER_TABLE_HPP

// A parameter list as one device-side table, so that the per-step work over every parameter
// (zeroing the gradients, their squared norm, clipping, packing for the data-parallel
// all-reduce, AdamW) is one kernel launch instead of one per tensor: a model with C = 512
// channels has over a thousand parameter tensors, most of them small, and launching a kernel
// for each costs more than the arithmetic.
//
// The table holds each tensor's value and gradient pointers and an offset into a packed buffer
// (moments, communication buffer); the work is cut into chunks of at most chunk_elements()
// consecutive elements of one tensor, one team per chunk, so that finding an element's tensor
// costs nothing and large tensors still spread over the device.
//
// The pointers are the ones the list holds when the table is built. A ParameterList only refers
// to the layers' storage (FSDP re-points that storage, but the list of a sharded model refers
// to the unit's slices, which stay put), so a table built from a list stays valid as long as
// the list does; update() rebuilds it when given a list that differs.

#include <Kokkos_Core.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include <dchag/core/error.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/scalar_traits.hpp>
#include <dchag/core/view.hpp>

namespace dchag {
namespace Impl {

template <class T>
struct TableTensor {
  T* value = nullptr;
  T* grad = nullptr;
  std::int64_t offset = 0;  // first element in a packed buffer (moments, dp buffer)
  std::int64_t size = 0;
  int decay = 0;            // AdamW weight decay applies
  int kind = 0;             // 2 * sharded + partitioned: which ranks add its squared norm
};

// Elements [begin, end) of tensor `tensor`.
struct TableChunk {
  std::int64_t tensor = 0;
  std::int64_t begin = 0, end = 0;
};

// Where a parameter's elements start in a buffer that holds the list end to end.
template <class T, class ExecSpace>
std::vector<std::int64_t> packed_offsets(const ParameterList<T, ExecSpace>& params,
                                         std::int64_t* total = nullptr) {
  std::vector<std::int64_t> offsets(params.size());
  std::int64_t at = 0;
  for (std::size_t i = 0; i < params.size(); ++i) {
    offsets[i] = at;
    at += static_cast<std::int64_t>(params[i].size());
  }
  if (total) *total = at;
  return offsets;
}

// Whether a space's teams run on the host (where a one-thread team's loop may be a plain loop).
template <class ExecSpace>
KOKKOS_INLINE_FUNCTION constexpr bool host_team() {
  return Kokkos::SpaceAccessibility<ExecSpace, Kokkos::HostSpace>::accessible;
}

}  // namespace Impl

template <class T, class ExecSpace>
class ParameterTable {
 public:
  using memory_space = MemorySpace<ExecSpace>;
  using TensorView = Kokkos::View<Impl::TableTensor<T>*, memory_space>;
  using ChunkView = Kokkos::View<Impl::TableChunk*, memory_space>;

  // Elements per chunk: enough to amortise a team's start, few enough that the largest tensors
  // give many teams.
  static constexpr std::int64_t chunk_elements() { return 4096; }

  ParameterTable() = default;
  explicit ParameterTable(const ParameterList<T, ExecSpace>& params) { update(params); }

  // Builds the table for `params` packed end to end, unless it already describes exactly this
  // list. Returns whether it was (re)built.
  bool update(const ParameterList<T, ExecSpace>& params) {
    if (matches(params)) return false;
    std::int64_t total = 0;
    const auto offsets = Impl::packed_offsets(params, &total);
    build(params, offsets, total);
    return true;
  }

  // Builds the table with the given packed offsets (one per parameter) into a buffer of
  // `packed` elements.
  void build(const ParameterList<T, ExecSpace>& params, const std::vector<std::int64_t>& offsets,
             std::int64_t packed) {
    Impl::require(offsets.size() == params.size(), "dchag::ParameterTable: ", offsets.size(),
                  " offsets for ", params.size(), " parameters");
    std::vector<Impl::TableTensor<T>> tensors(params.size());
    std::vector<Impl::TableChunk> chunks;
    for (std::size_t i = 0; i < params.size(); ++i) {
      const auto& p = params[i];
      Impl::require(p.grad.size() == p.size(), "dchag::ParameterTable: parameter '", p.name,
                    "' has ", p.size(), " values but ", p.grad.size(), " gradient entries");
      const auto n = static_cast<std::int64_t>(p.size());
      Impl::require(offsets[i] >= 0 && offsets[i] + n <= packed, "dchag::ParameterTable: "
                    "parameter '", p.name, "' at offset ", offsets[i], " exceeds the buffer of ",
                    packed);
      auto& t = tensors[i];
      t.value = p.value.data();
      t.grad = p.grad.data();
      t.offset = offsets[i];
      t.size = n;
      t.decay = p.decay ? 1 : 0;
      t.kind = 2 * (p.sharded ? 1 : 0) + (p.partitioned ? 1 : 0);
      for (std::int64_t b = 0; b < n; b += chunk_elements())
        chunks.push_back({static_cast<std::int64_t>(i), b,
                          b + chunk_elements() < n ? b + chunk_elements() : n});
    }
    copy_in(tensors_, host_tensors_, tensors, "dchag::ParameterTable::tensors");
    copy_in(chunks_, host_chunks_, chunks, "dchag::ParameterTable::chunks");
    tensor_count_ = tensors.size();
    chunk_count_ = chunks.size();
    packed_ = packed;
    built_ = true;
  }

  // Whether the table describes exactly these tensors, in this order (pointers, sizes and
  // flags; names are the caller's business).
  bool matches(const ParameterList<T, ExecSpace>& params) const {
    if (!built_ || params.size() != tensor_count_) return false;
    for (std::size_t i = 0; i < params.size(); ++i) {
      const auto& p = params[i];
      const auto& t = host_tensors_(i);
      if (t.value != p.value.data() || t.grad != p.grad.data() ||
          t.size != static_cast<std::int64_t>(p.size()) || t.decay != (p.decay ? 1 : 0) ||
          t.kind != 2 * (p.sharded ? 1 : 0) + (p.partitioned ? 1 : 0))
        return false;
    }
    return true;
  }

  // Forgets the list: the next update() rebuilds.
  void invalidate() { built_ = false; }

  bool built() const { return built_; }
  std::size_t tensor_count() const { return tensor_count_; }
  std::size_t chunk_count() const { return chunk_count_; }
  // Elements of the packed buffer the offsets refer to.
  std::int64_t packed_size() const { return packed_; }
  const TensorView& tensors() const { return tensors_; }
  const ChunkView& chunks() const { return chunks_; }

  // One team per chunk.
  Kokkos::TeamPolicy<ExecSpace> policy(const ExecSpace& space) const {
    return Kokkos::TeamPolicy<ExecSpace>(space, static_cast<int>(chunk_count_), Kokkos::AUTO);
  }

 private:
  // The device arrays only grow, so that rebuilding a table of the same size allocates nothing.
  template <class DeviceView, class HostView, class Entry>
  static void copy_in(DeviceView& device, HostView& host, const std::vector<Entry>& entries,
                      const char* label) {
    if (device.extent(0) < entries.size()) {
      device = DeviceView(Kokkos::view_alloc(Kokkos::WithoutInitializing, std::string(label)),
                          entries.size());
      host = Kokkos::create_mirror_view(device);
    }
    if (entries.empty()) return;
    for (std::size_t i = 0; i < entries.size(); ++i) host(i) = entries[i];
    Kokkos::deep_copy(device, host);
  }

  TensorView tensors_;
  typename TensorView::HostMirror host_tensors_;
  ChunkView chunks_;
  typename ChunkView::HostMirror host_chunks_;
  std::size_t tensor_count_ = 0, chunk_count_ = 0;
  std::int64_t packed_ = 0;
  bool built_ = false;
};

namespace Impl {

// f(i) for i in [begin, end) over the threads of a team. A host team of one thread takes a
// plain loop: Kokkos's team range steps by the run-time team size, which keeps the compiler
// from vectorising the loop.
template <class ExecSpace, class Member, class F>
KOKKOS_INLINE_FUNCTION void team_for(const Member& team, std::int64_t begin, std::int64_t end,
                                     const F& f) {
  if (host_team<ExecSpace>() && team.team_size() == 1) {
    for (std::int64_t i = begin; i < end; ++i) f(i);
  } else {
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, begin, end), f);
  }
}

// Gradients (or values) of every tensor of a table, one launch. The operations are functors,
// not lambdas, because they run inside member functions on device backends.
template <class T, class ExecSpace>
struct TableFill {
  using member_type = typename Kokkos::TeamPolicy<ExecSpace>::member_type;
  typename ParameterTable<T, ExecSpace>::TensorView tensors;
  typename ParameterTable<T, ExecSpace>::ChunkView chunks;
  T value;

  KOKKOS_INLINE_FUNCTION void operator()(const member_type& team) const {
    const TableChunk c = chunks(team.league_rank());
    T* const g = tensors(c.tensor).grad;
    const T x = value;
    team_for<ExecSpace>(team, c.begin, c.end, [&](std::int64_t i) { g[i] = x; });
  }
};

// The factor in the compute type: a 16-bit factor (1/3 in bf16 is 0.33398) would scale every
// gradient wrongly before the product is rounded.
template <class T, class ExecSpace>
struct TableScale {
  using member_type = typename Kokkos::TeamPolicy<ExecSpace>::member_type;
  typename ParameterTable<T, ExecSpace>::TensorView tensors;
  typename ParameterTable<T, ExecSpace>::ChunkView chunks;
  compute_t<T> alpha;

  KOKKOS_INLINE_FUNCTION void operator()(const member_type& team) const {
    const TableChunk c = chunks(team.league_rank());
    T* const g = tensors(c.tensor).grad;
    const compute_t<T> a = alpha;
    team_for<ExecSpace>(team, c.begin, c.end, [&](std::int64_t i) { g[i] *= a; });
  }
};

// Sums of squared gradients by kind (2 * sharded + partitioned), in double, in one reduction.
// A NaN or Inf gradient makes its kind's sum, and so the norm, non-finite: this reduction is
// also the check that a step did not diverge.
template <class T, class ExecSpace>
struct TableSquaresByKind {
  using member_type = typename Kokkos::TeamPolicy<ExecSpace>::member_type;
  using value_type = double[];
  static constexpr unsigned kinds = 4;
  unsigned value_count = kinds;
  typename ParameterTable<T, ExecSpace>::TensorView tensors;
  typename ParameterTable<T, ExecSpace>::ChunkView chunks;

  KOKKOS_INLINE_FUNCTION void init(double* s) const {
    for (unsigned k = 0; k < kinds; ++k) s[k] = 0;
  }
  KOKKOS_INLINE_FUNCTION void join(double* d, const double* s) const {
    for (unsigned k = 0; k < kinds; ++k) d[k] += s[k];
  }
  // Kokkos 3.4 joins through volatile pointers; 4.x through plain ones.
  KOKKOS_INLINE_FUNCTION void join(volatile double* d, const volatile double* s) const {
    for (unsigned k = 0; k < kinds; ++k) d[k] += s[k];
  }

  KOKKOS_INLINE_FUNCTION void operator()(const member_type& team, double* s) const {
    const TableChunk c = chunks(team.league_rank());
    const TableTensor<T> t = tensors(c.tensor);
    const T* const g = t.grad;
    if constexpr (host_team<ExecSpace>()) {
      if (team.team_size() == 1) {
        // Four partial sums: one chain of dependent double additions would leave the loop
        // waiting on the adder's latency. The order is fixed by the chunk, not by the threads.
        double a[4] = {0, 0, 0, 0};
        std::int64_t i = c.begin;
        for (; i + 4 <= c.end; i += 4)
          for (int l = 0; l < 4; ++l) {
            const double e = static_cast<double>(g[i + l]);
            a[l] += e * e;
          }
        for (; i < c.end; ++i) {
          const double e = static_cast<double>(g[i]);
          a[0] += e * e;
        }
        s[t.kind] += (a[0] + a[1]) + (a[2] + a[3]);
        return;
      }
    }
    double part = 0;
    Kokkos::parallel_reduce(
        Kokkos::TeamThreadRange(team, c.begin, c.end),
        [&](std::int64_t i, double& a) {
          const double e = static_cast<double>(g[i]);
          a += e * e;
        },
        part);
    Kokkos::single(Kokkos::PerTeam(team), [&]() { s[t.kind] += part; });
  }
};

// buffer[offset + i] = grad[i] for every tensor, in the buffer's type B (T, or accum_t<T> for
// 16-bit gradients: widening is exact).
template <class T, class ExecSpace, class B = T>
struct TablePack {
  using member_type = typename Kokkos::TeamPolicy<ExecSpace>::member_type;
  typename ParameterTable<T, ExecSpace>::TensorView tensors;
  typename ParameterTable<T, ExecSpace>::ChunkView chunks;
  View1<B, ExecSpace> buffer;

  KOKKOS_INLINE_FUNCTION void operator()(const member_type& team) const {
    const TableChunk c = chunks(team.league_rank());
    const TableTensor<T> t = tensors(c.tensor);
    const T* const g = t.grad;
    B* const b = buffer.data() + t.offset;
    team_for<ExecSpace>(team, c.begin, c.end, [&](std::int64_t i) { b[i] = B(g[i]); });
  }
};

// grad[i] = buffer[offset + i] * alpha for every tensor (the product in B, rounded once to T).
template <class T, class ExecSpace, class B = T>
struct TableUnpackScaled {
  using member_type = typename Kokkos::TeamPolicy<ExecSpace>::member_type;
  typename ParameterTable<T, ExecSpace>::TensorView tensors;
  typename ParameterTable<T, ExecSpace>::ChunkView chunks;
  View1<B, ExecSpace> buffer;
  B alpha;

  KOKKOS_INLINE_FUNCTION void operator()(const member_type& team) const {
    const TableChunk c = chunks(team.league_rank());
    const TableTensor<T> t = tensors(c.tensor);
    T* const g = t.grad;
    const B* const b = buffer.data() + t.offset;
    const B a = alpha;
    team_for<ExecSpace>(team, c.begin, c.end, [&](std::int64_t i) { g[i] = T(b[i] * a); });
  }
};

}  // namespace Impl

// Every gradient of the table = 0 (one launch).
template <class T, class ExecSpace>
void zero_grad(const ExecSpace& space, const ParameterTable<T, ExecSpace>& table) {
  if (table.chunk_count() == 0) return;
  Kokkos::parallel_for("dchag::zero_grad", table.policy(space),
                       Impl::TableFill<T, ExecSpace>{table.tensors(), table.chunks(), T(0)});
}

// Every gradient of the table *= alpha (one launch).
template <class T, class ExecSpace>
void scale_grads(const ExecSpace& space, const ParameterTable<T, ExecSpace>& table,
                 compute_t<T> alpha) {
  if (table.chunk_count() == 0) return;
  Kokkos::parallel_for("dchag::scale_grads", table.policy(space),
                       Impl::TableScale<T, ExecSpace>{table.tensors(), table.chunks(), alpha});
}

// Sums of the squared gradients in double, by kind: sums[2 * sharded + partitioned] (one
// reduction over every tensor).
template <class T, class ExecSpace>
void grad_squares_by_kind(const ExecSpace& space, const ParameterTable<T, ExecSpace>& table,
                          double (&sums)[4]) {
  for (auto& s : sums) s = 0;
  if (table.chunk_count() == 0) return;
  Impl::TableSquaresByKind<T, ExecSpace> f;
  f.tensors = table.tensors();
  f.chunks = table.chunks();
  Kokkos::View<double*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>> result(sums,
                                                                                          4);
  Kokkos::parallel_reduce("dchag::grad_sum_squares", table.policy(space), f, result);
}

// Sum over all gradients of the table of g^2, in double.
template <class T, class ExecSpace>
double grad_sum_squares(const ExecSpace& space, const ParameterTable<T, ExecSpace>& table) {
  double sums[4];
  grad_squares_by_kind(space, table, sums);
  return sums[0] + sums[1] + sums[2] + sums[3];
}

}  // namespace dchag

#endif
