#ifndef DCHAG_KERNELS_RESIDUAL_HPP
#define DCHAG_KERNELS_RESIDUAL_HPP

// The residual connection of a transformer block, Y = A + B on [rows, n] views. Out of place,
// unlike add_scaled (kernels/reductions.hpp): the block keeps its input for the backward, and
// the sum goes to a buffer of its own. The backward of a residual is the same sum of gradients.

#include <Kokkos_Core.hpp>
#include <cstdint>

#include <dchag/core/error.hpp>
#include <dchag/kernels/reductions.hpp>

namespace dchag {

// Y = A + B, element by element; Y may be A or B.
template <class ExecSpace, class AV, class BV, class YV>
void residual_add(const ExecSpace& space, const AV& A, const BV& B, const YV& Y) {
  const char* where = "dchag::residual_add";
  Impl::require_same_shape(where, A, B);
  Impl::require_same_shape(where, A, Y);
  const int rows = static_cast<int>(Y.extent(0)), n = static_cast<int>(Y.extent(1));
  if constexpr (Kokkos::SpaceAccessibility<ExecSpace, Kokkos::HostSpace>::accessible) {
    // Row segments as in add_bias: a flat index split by a division per element kept the
    // loop from vectorising and ran at a fifth of the memory bandwidth.
    constexpr int S = 1024;
    const int segments = (n + S - 1) / S;
    Kokkos::parallel_for(
        where, Impl::flat_policy(space, std::size_t(rows) * segments),
        KOKKOS_LAMBDA(std::int64_t k) {
          const int i = static_cast<int>(k / segments);
          const int j0 = static_cast<int>(k % segments) * S;
          const int j1 = n - j0 < S ? n : j0 + S;
          for (int j = j0; j < j1; ++j) Y(i, j) = A(i, j) + B(i, j);
        });
  } else {
    using Policy = Kokkos::MDRangePolicy<ExecSpace, Kokkos::Rank<2, Kokkos::Iterate::Right,
                                                                 Kokkos::Iterate::Right>>;
    Kokkos::parallel_for(
        where, Policy(space, {0, 0}, {rows, n}),
        KOKKOS_LAMBDA(int i, int j) { Y(i, j) = A(i, j) + B(i, j); });
  }
}

}  // namespace dchag

#endif
