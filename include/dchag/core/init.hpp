#ifndef DCHAG_CORE_INIT_HPP
#define DCHAG_CORE_INIT_HPP

// Parameter initialisers: truncated normal, uniform, constant, and the fixed sin-cos embeddings
// of MAE / ClimaX.
//
// Random initialisers address the *logical* (un-sharded) tensor. A view that holds only part of
// a parameter says where it sits, either as a flat `offset` (element i of the view, counted in
// row-major order, receives logical element offset + i: right for any contiguous range of a
// row-major tensor, e.g. a block of rows) or as a LogicalSlice (a box of the full tensor, e.g. a
// block of columns of a row-parallel weight). Every rank then holds exactly the values the
// single-rank model holds, whatever the partition: that is the partition-invariance contract.
//
// Values are computed on the host in double and copied once: initialisation is not hot, and the
// host is the one place where the arithmetic is the same for every backend (see random.hpp).
// Views of any rank, layout and memory space are accepted; the logical order is always
// row-major over the view's extents, as in PyTorch and safetensors.

#include <Kokkos_Core.hpp>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <dchag/core/error.hpp>
#include <dchag/core/random.hpp>

namespace dchag {

// Where a view lies inside the logical tensor its values belong to: that tensor's extents, and
// the logical index of the view's element (0, ..., 0), one entry per dimension of the view.
struct LogicalSlice {
  std::vector<std::size_t> full_extents;
  std::vector<std::size_t> start;
};

namespace Impl {

template <class View, std::size_t... I>
decltype(auto) element(const View& v, const std::size_t* idx, std::index_sequence<I...>) {
  return v(idx[I]...);
}

template <class Tmp, class View, std::size_t... I>
Tmp same_extents(const std::string& label, const View& v, std::index_sequence<I...>) {
  // The label must be a std::string: view_alloc takes a const char* for user memory.
  return Tmp(Kokkos::view_alloc(Kokkos::WithoutInitializing, label), v.extent(I)...);
}

// Stores value(logical(i, idx)) into every element of a host-accessible view h, where i is the
// element's row-major position in h and idx its multi-index.
template <class HostView, class Logical, class Value>
void fill_host_view(const HostView& h, const Logical& logical, const Value& value) {
  constexpr std::size_t rank = HostView::rank;
  using T = typename HostView::non_const_value_type;
  std::size_t idx[rank > 0 ? rank : 1] = {};
  const std::size_t n = h.size();
  for (std::size_t i = 0; i < n; ++i) {
    element(h, idx, std::make_index_sequence<rank>()) = static_cast<T>(value(logical(i, idx)));
    for (std::size_t d = rank; d-- > 0;) {  // row-major increment of idx
      if (++idx[d] < h.extent(d)) break;
      idx[d] = 0;
    }
  }
}

// fill_host_view for a view in any memory space and layout.
template <class View, class Logical, class Value>
void fill_from_host(const View& v, const Logical& logical, const Value& value) {
  static_assert(!std::is_const<typename View::value_type>::value,
                "dchag init: cannot initialise a view of const elements");
  using Memory = typename View::memory_space;
  if (v.size() == 0) return;
  if constexpr (Kokkos::SpaceAccessibility<Kokkos::HostSpace, Memory>::accessible) {
    Kokkos::fence();  // a kernel may still be writing v (UVM, host-pinned, OpenMP)
    fill_host_view(v, logical, value);
  } else {
    if (v.span_is_contiguous()) {
      auto h = Kokkos::create_mirror_view(v);
      fill_host_view(h, logical, value);
      Kokkos::deep_copy(v, h);
    } else {
      // A strided device view cannot be copied to or from the host directly: go through a
      // contiguous copy in the same space, which deep_copy then remaps on the device.
      using Tmp = Kokkos::View<typename View::non_const_data_type, Kokkos::LayoutRight, Memory>;
      Tmp tmp = same_extents<Tmp>("dchag::init staging", v,
                                  std::make_index_sequence<View::rank>());
      auto h = Kokkos::create_mirror_view(tmp);
      fill_host_view(h, logical, value);
      Kokkos::deep_copy(tmp, h);
      Kokkos::deep_copy(v, tmp);
    }
  }
}

// Logical index = offset + row-major position inside the view.
struct FlatOffset {
  std::uint64_t offset;
  std::uint64_t operator()(std::size_t i, const std::size_t*) const { return offset + i; }
};

// Logical index = row-major position of (start + idx) inside the full tensor.
struct BoxOffset {
  std::vector<std::uint64_t> start, stride;
  std::uint64_t operator()(std::size_t, const std::size_t* idx) const {
    std::uint64_t at = 0;
    for (std::size_t d = 0; d < start.size(); ++d) at += (start[d] + idx[d]) * stride[d];
    return at;
  }
};

template <class View>
BoxOffset box_offset(const char* where, const View& v, const LogicalSlice& s) {
  constexpr std::size_t rank = View::rank;
  require(s.full_extents.size() == rank && s.start.size() == rank, where, ": view ", shape_of(v),
          " has rank ", rank, " but the LogicalSlice has ", s.full_extents.size(),
          " full extents and ", s.start.size(), " start indices");
  BoxOffset box{std::vector<std::uint64_t>(rank), std::vector<std::uint64_t>(rank)};
  std::uint64_t stride = 1;
  for (std::size_t d = rank; d-- > 0;) {
    require(s.start[d] <= s.full_extents[d] && v.extent(d) <= s.full_extents[d] - s.start[d],
            where, ": view ", shape_of(v), " starting at index ", s.start[d], " of dimension ", d,
            " does not fit in the logical extent ", s.full_extents[d]);
    box.start[d] = s.start[d];
    box.stride[d] = stride;
    stride *= s.full_extents[d];
  }
  return box;
}

// P(lo <= stddev * Z <= hi) for a standard normal Z; only used to refuse hopeless intervals,
// so the non-portable erfc is harmless here.
inline double normal_mass(double stddev, double lo, double hi) {
  if (hi <= 0) return normal_mass(stddev, -hi, -lo);  // upper tails are the accurate ones
  const double s = stddev * 1.41421356237309504880;
  return 0.5 * (std::erfc(lo / s) - std::erfc(hi / s));
}

struct TruncatedNormalValue {
  ::dchag::CounterRng rng;
  double stddev, lo, hi;
  static constexpr std::uint64_t max_draws = 100000;  // >= 1e-3 acceptance: fails with p < e^-100
  double operator()(std::uint64_t index) const {
    for (std::uint64_t draw = 0; draw < max_draws; ++draw) {
      const double x = stddev * rng.normal(index, draw);
      if (lo <= x && x <= hi) return x;
    }
    throw Error(concat("truncated_normal: no draw in [", lo, ", ", hi, "] for element ", index,
                       " after ", max_draws, " attempts"));
  }
};

inline TruncatedNormalValue truncated_normal_value(std::uint64_t seed, std::uint64_t stream,
                                                   double stddev, double lo, double hi) {
  require(std::isfinite(stddev) && stddev > 0,
          "truncated_normal: std must be positive and finite, got ", stddev);
  require(lo < hi, "truncated_normal: need lo < hi, got lo = ", lo, ", hi = ", hi);
  const double mass = normal_mass(stddev, lo, hi);
  require(mass >= 1e-3, "truncated_normal: [", lo, ", ", hi, "] holds only ", mass,
          " of a normal with std ", stddev, "; rejection sampling needs at least 1e-3");
  return TruncatedNormalValue{::dchag::CounterRng(seed, stream), stddev, lo, hi};
}

struct UniformValue {
  ::dchag::CounterRng rng;
  double lo, width;
  double operator()(std::uint64_t index) const { return std::fma(width, rng.uniform(index), lo); }
};

inline UniformValue uniform_value(std::uint64_t seed, std::uint64_t stream, double lo, double hi) {
  require(std::isfinite(lo) && std::isfinite(hi) && lo <= hi && std::isfinite(hi - lo),
          "uniform: need finite lo <= hi, got lo = ", lo, ", hi = ", hi);
  return UniformValue{::dchag::CounterRng(seed, stream), lo, hi - lo};
}

// MAE's get_1d_sincos_pos_embed_from_grid, column k of a width-dim embedding at `position`:
// omega_j = 1 / 10000^(j / (dim/2)), columns [0, dim/2) sin(position * omega), the rest cos.
// Evaluated with the same operations as numpy, in double.
inline double sincos_value(std::size_t dim, std::size_t k, std::size_t position) {
  const std::size_t half = dim / 2;
  const std::size_t j = k < half ? k : k - half;
  const double exponent = static_cast<double>(j) / (static_cast<double>(dim) / 2.0);
  const double omega = 1.0 / std::pow(10000.0, exponent);
  const double angle = static_cast<double>(position) * omega;
  return k < half ? std::sin(angle) : std::cos(angle);
}

}  // namespace Impl

// timm's trunc_normal_(tensor, mean=0, std=1, a=-2, b=2): the bounds are absolute values, not
// multiples of std. With ClimaX's std 0.02 they sit at 100 sigma, so the weights are practically
// an uncut normal of std 0.02 (a cut at +-2 sigma would give std 0.0176 and max |w| 0.04).
inline constexpr double trunc_normal_default_a = -2.0;
inline constexpr double trunc_normal_default_b = 2.0;

// Truncated normal as timm's / PyTorch's trunc_normal_: mean 0, standard deviation `stddev`
// before the cut, values restricted to [lo, hi] (absolute bounds, as in PyTorch). Rejection
// sampling with per-element draws, so the value of a logical element never depends on its
// neighbours. Element i of v (row-major) gets logical element offset + i of the tensor.
template <class View>
void truncated_normal(const View& v, std::uint64_t seed, std::uint64_t stream, double stddev,
                      double lo, double hi, std::uint64_t offset = 0) {
  Impl::fill_from_host(v, Impl::FlatOffset{offset},
                       Impl::truncated_normal_value(seed, stream, stddev, lo, hi));
}

// timm's defaults a = -2, b = 2 (absolute), what ClimaX's trunc_normal_(w, std=0.02) uses.
template <class View>
void truncated_normal(const View& v, std::uint64_t seed, std::uint64_t stream, double stddev) {
  truncated_normal(v, seed, stream, stddev, trunc_normal_default_a, trunc_normal_default_b);
}

// The part of the logical tensor described by `slice` (e.g. a column block of a weight).
template <class View>
void truncated_normal(const View& v, std::uint64_t seed, std::uint64_t stream, double stddev,
                      double lo, double hi, const LogicalSlice& slice) {
  auto value = Impl::truncated_normal_value(seed, stream, stddev, lo, hi);
  Impl::fill_from_host(v, Impl::box_offset("truncated_normal", v, slice), value);
}

// Uniform in [lo, hi) (hi itself only through rounding, e.g. to float). Element i of v
// (row-major) gets logical element offset + i.
template <class View>
void uniform(const View& v, std::uint64_t seed, std::uint64_t stream, double lo, double hi,
             std::uint64_t offset = 0) {
  Impl::fill_from_host(v, Impl::FlatOffset{offset}, Impl::uniform_value(seed, stream, lo, hi));
}

template <class View>
void uniform(const View& v, std::uint64_t seed, std::uint64_t stream, double lo, double hi,
             const LogicalSlice& slice) {
  auto value = Impl::uniform_value(seed, stream, lo, hi);
  Impl::fill_from_host(v, Impl::box_offset("uniform", v, slice), value);
}

template <class View>
void constant(const View& v, double value) {
  Kokkos::deep_copy(v, static_cast<typename View::non_const_value_type>(value));
}

// 1-D sin-cos embedding v[n, D] of positions first_position ... first_position + n - 1, as MAE's
// get_1d_sincos_pos_embed_from_grid and ClimaX's var_embed (row c = channel c). A rank that owns
// channels [c0, c1) passes first_position = c0. D must be even.
template <class View>
void sincos_1d(const View& v, std::size_t first_position = 0) {
  static_assert(View::rank == 2, "sincos_1d: expects a view [positions, D]");
  const std::size_t dim = v.extent(1);
  Impl::require(dim > 0 && dim % 2 == 0, "sincos_1d: embedding width D of ", Impl::shape_of(v),
                " must be a positive multiple of 2, got ", dim);
  Impl::fill_from_host(v, Impl::FlatOffset{0}, [=](std::uint64_t i) {
    return Impl::sincos_value(dim, i % dim, first_position + i / dim);
  });
}

// 2-D sin-cos embedding v[h*w, D] of an h x w grid of patches (row-major: patch l is grid row
// l / w, column l % w), as MAE's / ClimaX's get_2d_sincos_pos_embed. MAE builds
// grid = meshgrid(grid_w, grid_h), so its "emb_h" (columns [0, D/2)) encodes the column index
// and "emb_w" (columns [D/2, D)) the row index; reproduced here so that pos_embed equals the
// PyTorch one. Each half is a 1-D embedding of width D/2, so D must be a multiple of 4.
template <class View>
void sincos_2d(const View& v, std::size_t h, std::size_t w) {
  static_assert(View::rank == 2, "sincos_2d: expects a view [h*w, D]");
  const std::size_t dim = v.extent(1);
  Impl::require(dim > 0 && dim % 4 == 0, "sincos_2d: embedding width D of ", Impl::shape_of(v),
                " must be a positive multiple of 4, got ", dim);
  Impl::require(v.extent(0) == h * w, "sincos_2d: view ", Impl::shape_of(v), " needs ", h, " x ",
                w, " = ", h * w, " rows");
  const std::size_t half = dim / 2;
  Impl::fill_from_host(v, Impl::FlatOffset{0}, [=](std::uint64_t i) {
    const std::size_t l = i / dim, k = i % dim;
    const std::size_t row = l / w, col = l % w;
    return k < half ? Impl::sincos_value(half, k, col) : Impl::sincos_value(half, k - half, row);
  });
}

}  // namespace dchag

#endif
