#ifndef DCHAG_KERNELS_REDUCTIONS_HPP
#define DCHAG_KERNELS_REDUCTIONS_HPP

// Small whole-tensor operations the training loop needs on views of any rank: the squared norm
// for gradient clipping, NaN/Inf detection, in-place scaling and Y += alpha X. They treat a
// contiguous view as its flat array of elements, so one kernel serves every rank.
//
// Unlike the activation kernels these accept empty views: under FSDP a small parameter's local
// slice can legitimately hold no element on some ranks, and its norm is then simply 0.
//
// The Impl helpers below (flat views, shape checks, column tiling) are shared by the other
// element-wise and column-reducing kernels.

#include <Kokkos_Core.hpp>
#include <cstdint>
#include <type_traits>

#include <dchag/core/error.hpp>
#include <dchag/core/view.hpp>
#include <dchag/core/kokkos_compat.hpp>

namespace dchag {
namespace Impl {

// 64-bit indices: flat sizes of activations ([B, C, L, D] tokens) pass 2^31, and the default
// index type of device backends is 32-bit.
template <class ExecSpace>
Kokkos::RangePolicy<ExecSpace, Kokkos::IndexType<std::int64_t>> flat_policy(
    const ExecSpace& space, std::size_t n) {
  return Kokkos::RangePolicy<ExecSpace, Kokkos::IndexType<std::int64_t>>(
      space, 0, static_cast<std::int64_t>(n));
}

template <class View>
void require_contiguous(const char* where, const View& v) {
  require(v.span_is_contiguous(), where, ": view ", shape_of(v),
          " is not contiguous (take a copy of the strided view first)");
}

template <class A, class B>
void require_same_shape(const char* where, const A& a, const B& b) {
  static_assert(unsigned(A::rank) == unsigned(B::rank), "views must have the same rank");
  bool same = true;
  for (unsigned r = 0; r < A::rank; ++r) same = same && a.extent(r) == b.extent(r);
  require(same, where, ": ", shape_of(a), " and ", shape_of(b), " must have the same shape");
}

// Two views can be walked element by element through their flat arrays only if both store
// their elements in the same order.
template <class A, class B>
constexpr bool same_flat_order() {
  using LA = typename A::array_layout;
  using LB = typename B::array_layout;
  return A::rank <= 1 ||
         (std::is_same<LA, LB>::value && !std::is_same<LA, Kokkos::LayoutStride>::value);
}

// Column sums over the rows of a [rows, n] view (dbias, dgamma, dbeta) run as one thread per
// tile of adjacent columns, each summing its rows in order: no atomics, and the result is
// bitwise the same on every backend and thread count (partition invariance is checked to
// float rounding, and this removes one source of it). On host backends a tile is a cache line
// wide, so a thread uses whole lines row by row; on GPUs it is one column, so adjacent threads
// read adjacent addresses of a row (coalesced). The cost is parallelism of only n threads on a
// GPU; a row-chunked two-pass version is the upgrade if profiles show it.
template <class ExecSpace>
constexpr int column_tile() {
  return Kokkos::SpaceAccessibility<ExecSpace, Kokkos::HostSpace>::accessible ? 16 : 1;
}

// The same column sums on host backends, with wider chunks: a thread walks its rows over
// `column_chunk` contiguous columns, an inner loop long enough to vectorise and to keep the
// hardware prefetcher streaming, where a 16-column tile made it hop between rows every 64
// bytes. The summation order per column is unchanged, so are the bits. Kernels whose results
// other code expects bitwise equal to a column_tile() kernel keep using column_tile().
template <class ExecSpace>
constexpr int column_chunk() {
  return Kokkos::SpaceAccessibility<ExecSpace, Kokkos::HostSpace>::accessible ? 256 : 1;
}

// Row reductions of the host paths of the row-wise kernels (softmax, layer norm). A plain
// `s += f(j)` is one dependent add per element, which the compiler may not vectorise (that
// would reorder the sum); W interleaved partial sums vectorise and hide the add latency.
template <class T, class F>
KOKKOS_INLINE_FUNCTION T lane_sum(int n, const F& f) {
  constexpr int W = 16;
  T s[W];
  for (int c = 0; c < W; ++c) s[c] = T(0);
  int j = 0;
  for (; j + W <= n; j += W)
    for (int c = 0; c < W; ++c) s[c] += f(j + c);
  T tail = T(0);
  for (; j < n; ++j) tail += f(j);
  for (int w = W / 2; w > 0; w /= 2)
    for (int c = 0; c < w; ++c) s[c] += s[c + w];
  return s[0] + tail;
}

template <class T, class F>
KOKKOS_INLINE_FUNCTION T lane_max(int n, const F& f) {
  constexpr int W = 16;
  T m[W];
  const T first = f(0);
  for (int c = 0; c < W; ++c) m[c] = first;
  int j = 0;
  for (; j + W <= n; j += W)
    for (int c = 0; c < W; ++c) {
      const T v = f(j + c);
      m[c] = m[c] < v ? v : m[c];
    }
  for (; j < n; ++j) {
    const T v = f(j);
    m[0] = m[0] < v ? v : m[0];
  }
  for (int w = W / 2; w > 0; w /= 2)
    for (int c = 0; c < w; ++c) m[c] = m[c] < m[c + w] ? m[c + w] : m[c];
  return m[0];
}

}  // namespace Impl

// Sum of squares of all elements, accumulated in double whatever the scalar, so that the global
// gradient norm of a float model does not lose the small parameters' contributions.
template <class ExecSpace, class View>
double sum_squares(const ExecSpace& space, const View& x) {
  Impl::require_contiguous("dchag::sum_squares", x);
  const auto v = Impl::flat(x);
  double result = 0;
  Kokkos::parallel_reduce(
      "dchag::sum_squares", Impl::flat_policy(space, v.size()),
      KOKKOS_LAMBDA(std::int64_t k, double& s) {
        const double e = static_cast<double>(v(k));
        s += e * e;
      },
      result);
  return result;
}

// False if any element is NaN or infinite (a diverged step must not reach the optimizer).
template <class ExecSpace, class View>
bool all_finite(const ExecSpace& space, const View& x) {
  Impl::require_contiguous("dchag::all_finite", x);
  const auto v = Impl::flat(x);
  int ok = 1;
  Kokkos::parallel_reduce(
      "dchag::all_finite", Impl::flat_policy(space, v.size()),
      KOKKOS_LAMBDA(std::int64_t k, int& good) {
        if (!math::isfinite(v(k))) good = 0;
      },
      Kokkos::LAnd<int>(ok));
  return ok != 0;
}

// x *= alpha, in place.
template <class ExecSpace, class View>
void scale(const ExecSpace& space, const View& x, typename View::non_const_value_type alpha) {
  Impl::require_contiguous("dchag::scale", x);
  const auto v = Impl::flat(x);
  Kokkos::parallel_for(
      "dchag::scale", Impl::flat_policy(space, v.size()),
      KOKKOS_LAMBDA(std::int64_t k) { v(k) *= alpha; });
}

// y += alpha * x; y and x have the same shape.
template <class ExecSpace, class YView, class XView>
void add_scaled(const ExecSpace& space, const YView& y,
                typename YView::non_const_value_type alpha, const XView& x) {
  static_assert(Impl::same_flat_order<YView, XView>(),
                "dchag::add_scaled: views must share a LayoutLeft or LayoutRight layout");
  const char* where = "dchag::add_scaled";
  Impl::require_same_shape(where, y, x);
  Impl::require_contiguous(where, y);
  Impl::require_contiguous(where, x);
  const auto yv = Impl::flat(y);
  const auto xv = Impl::flat(x);
  Kokkos::parallel_for(
      "dchag::add_scaled", Impl::flat_policy(space, yv.size()),
      KOKKOS_LAMBDA(std::int64_t k) { yv(k) += alpha * xv(k); });
}

}  // namespace dchag

#endif
