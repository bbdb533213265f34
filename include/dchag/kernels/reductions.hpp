#ifndef DCHAG_KERNELS_REDUCTIONS_HPP
#define DCHAG_KERNELS_REDUCTIONS_HPP

// Small whole-tensor operations the training loop needs on views of any rank: the squared norm
// for gradient clipping, NaN/Inf detection, in-place scaling and Y += alpha X. They treat a
// contiguous view as its flat array of elements, so one kernel serves every rank. Scales are
// given in the compute type (float for 16-bit views), and sums are never kept in 16 bits.
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
#include <dchag/core/scalar_traits.hpp>

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

// Calls f(i, j0, j1) for row i and columns [j0, j1) of a rows x n index space, the calls
// together covering every (i, j) once. On host backends a call takes a segment of up to 1024
// columns, so the kernel's inner loop over j is contiguous and vectorises and the index is
// split by division once per segment (a division per element made the flat kernels of this
// library 10-30 times slower on the host). On GPUs a call takes one element, so adjacent
// threads touch adjacent columns (coalesced) and every element is a thread.
template <class ExecSpace, class F>
void for_each_row_segment(const char* label, const ExecSpace& space, std::size_t rows,
                          std::size_t n, const F& f) {
  const std::int64_t cols = static_cast<std::int64_t>(n);
  if constexpr (Kokkos::SpaceAccessibility<ExecSpace, Kokkos::HostSpace>::accessible) {
    constexpr std::int64_t S = 1024;
    const std::int64_t segments = (cols + S - 1) / S;
    Kokkos::parallel_for(
        label, flat_policy(space, rows * std::size_t(segments)),
        KOKKOS_LAMBDA(std::int64_t k) {
          const std::int64_t j0 = (k % segments) * S;
          f(k / segments, j0, cols - j0 < S ? cols : j0 + S);
        });
  } else {
    Kokkos::parallel_for(
        label, flat_policy(space, rows * n),
        KOKKOS_LAMBDA(std::int64_t k) { f(k / cols, k % cols, k % cols + 1); });
  }
}

// sum_{j < n} term(j) in 16 interleaved partial sums combined in a fixed order: over contiguous
// data the fixed-width inner loop vectorises without reassociation flags, the result is the
// same on every run, and the rounding error grows with n / 16 rather than n.
template <class T, class Term>
KOKKOS_INLINE_FUNCTION T sum_interleaved(std::int64_t n, const Term& term) {
  constexpr int W = 16;
  T s[W];
  for (int k = 0; k < W; ++k) s[k] = T(0);
  std::int64_t j = 0;
  for (; j + W <= n; j += W)
    for (int k = 0; k < W; ++k) s[k] += term(j + k);
  for (int k = 0; j + k < n; ++k) s[k] += term(j + k);
  for (int w = W / 2; w > 0; w /= 2)
    for (int k = 0; k < w; ++k) s[k] += s[k + w];
  return s[0];
}

// Column sums over the rows of a [rows, n] view (dbias, dgamma, dbeta, per-channel sums) run
// as one thread per chunk of adjacent columns, each summing its rows in order: no atomics, and
// the result is bitwise the same on every backend and thread count (partition invariance is
// checked to float rounding, and this removes one source of it). On host backends a chunk is
// 256 columns, an inner loop long enough to vectorise and to keep the prefetcher streaming (a
// 16-column tile hopped between rows every 64 bytes and ran at half the speed); on GPUs it is
// one column, so adjacent threads read adjacent addresses of a row (coalesced). The cost is
// parallelism of only n threads on a GPU; a row-chunked two-pass version is the upgrade if
// profiles show it.
template <class ExecSpace>
constexpr int column_chunk() {
  return Kokkos::SpaceAccessibility<ExecSpace, Kokkos::HostSpace>::accessible ? 256 : 1;
}

// The largest of f(j), j < n (n > 0), in 16 interleaved lanes as sum_interleaved, for the
// row maxima of the softmax.
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
  if constexpr (Kokkos::SpaceAccessibility<ExecSpace, Kokkos::HostSpace>::accessible) {
    // Chunks of the flat array, each summed in interleaved partial sums: one element per call
    // left a chain of dependent double additions, at 4% of the memory bandwidth.
    constexpr std::int64_t S = 4096;
    const std::int64_t n = static_cast<std::int64_t>(v.size());
    const auto* p = v.data();
    Kokkos::parallel_reduce(
        "dchag::sum_squares", Impl::flat_policy(space, std::size_t((n + S - 1) / S)),
        KOKKOS_LAMBDA(std::int64_t c, double& s) {
          const std::int64_t k0 = c * S, m = n - k0 < S ? n - k0 : S;
          s += Impl::sum_interleaved<double>(m, [&](std::int64_t j) {
            const double e = static_cast<double>(p[k0 + j]);
            return e * e;
          });
        },
        result);
    return result;
  }
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
        if (!math::isfinite(compute_t<typename View::value_type>(v(k)))) good = 0;
      },
      Kokkos::LAnd<int>(ok));
  return ok != 0;
}

// x *= alpha, in place.
template <class ExecSpace, class View>
void scale(const ExecSpace& space, const View& x,
           compute_t<typename View::non_const_value_type> alpha) {
  Impl::require_contiguous("dchag::scale", x);
  const auto v = Impl::flat(x);
  Kokkos::parallel_for(
      "dchag::scale", Impl::flat_policy(space, v.size()),
      KOKKOS_LAMBDA(std::int64_t k) { v(k) *= alpha; });
}

// y += alpha * x; y and x have the same shape.
template <class ExecSpace, class YView, class XView>
void add_scaled(const ExecSpace& space, const YView& y,
                compute_t<typename YView::non_const_value_type> alpha, const XView& x) {
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
