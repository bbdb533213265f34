#ifndef DCHAG_KERNELS_BIAS_HPP
#define DCHAG_KERNELS_BIAS_HPP

// Bias of a linear layer on [rows, n] activations: broadcast over the rows in the forward, a
// column sum of the output gradient in the backward. Kept apart from the GEMM because under
// tensor parallelism the row-parallel layers add their bias only after the AllReduce.

#include <Kokkos_Core.hpp>
#include <cstdint>

#include <dchag/core/error.hpp>
#include <dchag/core/scalar_traits.hpp>
#include <dchag/kernels/reductions.hpp>

namespace dchag {
namespace Impl {

// db(j) += sum_i dY(i, j); see column_chunk() for why one thread owns a chunk
// of columns.
template <int W, class T, class DYV, class DBV>
struct SumRows {
  DYV dY;
  DBV db;

  KOKKOS_INLINE_FUNCTION void operator()(int tile) const {
    const int rows = static_cast<int>(dY.extent(0));
    const int n = static_cast<int>(dY.extent(1));
    const int j0 = tile * W;
    const int w = n - j0 < W ? n - j0 : W;
    T s[W];
    for (int c = 0; c < W; ++c) s[c] = T(0);
    for (int i = 0; i < rows; ++i)
      for (int c = 0; c < w; ++c) s[c] += dY(i, j0 + c);
    for (int c = 0; c < w; ++c) db(j0 + c) += s[c];
  }
};

template <class MV, class BV>
void check_bias(const char* where, const char* m, const MV& M, const char* b, const BV& B) {
  static_assert(MV::rank == 2 && BV::rank == 1, "bias kernels take [rows, n] and [n] views");
  require_nonempty(where, M);
  require(B.extent(0) == M.extent(1), where, ": bias ", b, " = ", shape_of(B),
          " must have one entry per column of ", m, " = ", shape_of(M));
}

}  // namespace Impl

// Y(i, j) += b(j).
template <class ExecSpace, class YV, class BV>
void add_bias(const ExecSpace& space, const YV& Y, const BV& b) {
  Impl::check_bias("dchag::add_bias", "Y", Y, "b", b);
  const int rows = static_cast<int>(Y.extent(0)), n = static_cast<int>(Y.extent(1));
  if constexpr (Kokkos::SpaceAccessibility<ExecSpace, Kokkos::HostSpace>::accessible) {
    // One work item per row segment of up to S columns: a vectorisable inner loop and one
    // division per segment, yet parallel over columns when there are few rows. On the host a
    // flat index split by division per element was 30 times slower, an MDRangePolicy 5 times.
    constexpr int S = 1024;
    const int segments = (n + S - 1) / S;
    Kokkos::parallel_for(
        "dchag::add_bias", Impl::flat_policy(space, std::size_t(rows) * segments),
        KOKKOS_LAMBDA(std::int64_t k) {
          const int i = static_cast<int>(k / segments);
          const int j0 = static_cast<int>(k % segments) * S;
          const int j1 = n - j0 < S ? n : j0 + S;
          for (int j = j0; j < j1; ++j) Y(i, j) += b(j);
        });
  } else {
    // On GPUs adjacent threads take adjacent columns (coalesced).
    using Policy = Kokkos::MDRangePolicy<ExecSpace, Kokkos::Rank<2, Kokkos::Iterate::Right,
                                                                 Kokkos::Iterate::Right>>;
    Kokkos::parallel_for(
        "dchag::add_bias", Policy(space, {0, 0}, {rows, n}),
        KOKKOS_LAMBDA(int i, int j) { Y(i, j) += b(j); });
  }
}

// db(j) += sum_i dY(i, j): accumulated, like every parameter gradient.
template <class ExecSpace, class DYV, class DBV>
void sum_rows(const ExecSpace& space, const DYV& dY, const DBV& db) {
  using T = accum_t<typename DBV::non_const_value_type>;  // the column sums
  Impl::check_bias("dchag::sum_rows", "dY", dY, "db", db);
  constexpr int W = Impl::column_chunk<ExecSpace>();
  const int n = static_cast<int>(dY.extent(1));
  Kokkos::parallel_for("dchag::sum_rows", Kokkos::RangePolicy<ExecSpace>(space, 0, (n + W - 1) / W),
                       Impl::SumRows<W, T, DYV, DBV>{dY, db});
}

}  // namespace dchag

#endif
