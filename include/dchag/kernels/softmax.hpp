#ifndef DCHAG_KERNELS_SOFTMAX_HPP
#define DCHAG_KERNELS_SOFTMAX_HPP

// Row-wise softmax of [rows, n] views (attention scores: rows = batch x heads x queries,
// n = keys) and its backward. On GPUs one team per row, with team reductions for the row max
// and sum, so that a long row is spread over a GPU's threads instead of one thread walking it.
// On host backends one thread per row, whose passes over the row (in L1) are plain loops the
// compiler vectorises: the team version ran there at a few per cent of the memory bandwidth.

#include <Kokkos_Core.hpp>

#include <dchag/core/error.hpp>
#include <dchag/core/fast_math.hpp>
#include <dchag/core/kokkos_compat.hpp>
#include <dchag/core/scalar_traits.hpp>
#include <dchag/kernels/reductions.hpp>

namespace dchag {
namespace Impl {

template <class T, class XV, class YV>
struct SoftmaxRows {
  XV X;
  YV Y;
  T scale;

  template <class Member>
  KOKKOS_INLINE_FUNCTION void operator()(const Member& team) const {
    const int i = team.league_rank();
    const int n = static_cast<int>(X.extent(1));
    // Subtracting the row max keeps exp() <= 1: scores of magnitude 1e3 would overflow.
    T row_max;
    Kokkos::parallel_reduce(
        Kokkos::TeamThreadRange(team, n),
        [&](int j, T& m) {
          const T v = scale * X(i, j);
          if (m < v) m = v;
        },
        Kokkos::Max<T>(row_max));
    // Y holds exp() between the two passes. Each element is read and written by one iteration,
    // so X and Y may be the same view.
    T sum;
    Kokkos::parallel_reduce(
        Kokkos::TeamThreadRange(team, n),
        [&](int j, T& s) {
          const T e = math::fast_exp(scale * X(i, j) - row_max);
          Y(i, j) = e;
          s += e;
        },
        sum);
    // The next pass may visit an element from a different thread than the one that wrote it.
    team.team_barrier();
    const T inv = T(1) / sum;
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, n), [&](int j) { Y(i, j) *= inv; });
  }
};

// The host version of SoftmaxRows: one row per work item.
template <class T, class XV, class YV>
struct SoftmaxRowsHost {
  XV X;
  YV Y;
  T scale;

  KOKKOS_INLINE_FUNCTION void operator()(int i) const {
    const int n = static_cast<int>(X.extent(1));
    const T row_max = lane_max<T>(n, [&](int j) { return scale * X(i, j); });
    // exp() first into Y, in its own loop, then summed: a loop of exp alone vectorises best.
    for (int j = 0; j < n; ++j) Y(i, j) = math::fast_exp(scale * X(i, j) - row_max);
    const T inv = T(1) / sum_interleaved<T>(n, [&](int j) { return Y(i, j); });
    for (int j = 0; j < n; ++j) Y(i, j) *= inv;
  }
};

template <class T, class YV, class DYV, class DXV>
struct SoftmaxRowsBackwardHost {
  YV Y;
  DYV dY;
  DXV dX;

  KOKKOS_INLINE_FUNCTION void operator()(int i) const {
    const int n = static_cast<int>(Y.extent(1));
    const T dot = sum_interleaved<T>(n, [&](int j) { return dY(i, j) * Y(i, j); });
    for (int j = 0; j < n; ++j) dX(i, j) = Y(i, j) * (dY(i, j) - dot);
  }
};

template <class ExecSpace>
constexpr bool host_rows() {
  return Kokkos::SpaceAccessibility<ExecSpace, Kokkos::HostSpace>::accessible;
}

template <class T, class YV, class DYV, class DXV>
struct SoftmaxRowsBackward {
  YV Y;
  DYV dY;
  DXV dX;

  template <class Member>
  KOKKOS_INLINE_FUNCTION void operator()(const Member& team) const {
    const int i = team.league_rank();
    const int n = static_cast<int>(Y.extent(1));
    // The reduction has read all of dY before any thread writes, so dX may alias dY.
    T dot;
    Kokkos::parallel_reduce(
        Kokkos::TeamThreadRange(team, n), [&](int j, T& s) { s += dY(i, j) * Y(i, j); }, dot);
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, n),
                         [&](int j) { dX(i, j) = Y(i, j) * (dY(i, j) - dot); });
  }
};

template <class AV, class BV>
void check_softmax(const char* where, const char* a, const AV& A, const char* b, const BV& B) {
  static_assert(AV::rank == 2 && BV::rank == 2, "softmax takes [rows, n] views");
  require_nonempty(where, A);
  require_nonempty(where, B);
  require(A.extent(0) == B.extent(0) && A.extent(1) == B.extent(1), where, ": ", a, " = ",
          shape_of(A), " and ", b, " = ", shape_of(B), " must have the same shape");
}

}  // namespace Impl

// Y = softmax(scale * X) over the last index of each row. X and Y may be the same view.
template <class ExecSpace, class XV, class YV>
void softmax_rows(const ExecSpace& space, const XV& X, const YV& Y,
                  compute_t<typename YV::non_const_value_type> scale = 1) {
  using T = accum_t<typename YV::non_const_value_type>;  // row maxima and sums
  Impl::check_softmax("dchag::softmax_rows", "X", X, "Y", Y);
  if constexpr (Impl::host_rows<ExecSpace>()) {
    Kokkos::parallel_for("dchag::softmax_rows",
                         Kokkos::RangePolicy<ExecSpace>(space, 0, static_cast<int>(X.extent(0))),
                         Impl::SoftmaxRowsHost<T, XV, YV>{X, Y, scale});
    return;
  }
  Kokkos::parallel_for(
      "dchag::softmax_rows",
      Kokkos::TeamPolicy<ExecSpace>(space, static_cast<int>(X.extent(0)), Kokkos::AUTO),
      Impl::SoftmaxRows<T, XV, YV>{X, Y, scale});
}

// dX = Y * (dY - rowsum(dY * Y)), the gradient with respect to the softmax input (the caller
// multiplies by its scale, if it used one). dX may alias dY.
template <class ExecSpace, class YV, class DYV, class DXV>
void softmax_rows_backward(const ExecSpace& space, const YV& Y, const DYV& dY, const DXV& dX) {
  using T = accum_t<typename DXV::non_const_value_type>;  // the row dot products
  const char* where = "dchag::softmax_rows_backward";
  Impl::check_softmax(where, "Y", Y, "dY", dY);
  Impl::check_softmax(where, "Y", Y, "dX", dX);
  if constexpr (Impl::host_rows<ExecSpace>()) {
    Kokkos::parallel_for("dchag::softmax_rows_backward",
                         Kokkos::RangePolicy<ExecSpace>(space, 0, static_cast<int>(Y.extent(0))),
                         Impl::SoftmaxRowsBackwardHost<T, YV, DYV, DXV>{Y, dY, dX});
    return;
  }
  Kokkos::parallel_for(
      "dchag::softmax_rows_backward",
      Kokkos::TeamPolicy<ExecSpace>(space, static_cast<int>(Y.extent(0)), Kokkos::AUTO),
      Impl::SoftmaxRowsBackward<T, YV, DYV, DXV>{Y, dY, dX});
}

}  // namespace dchag

#endif
