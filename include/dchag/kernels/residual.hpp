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
  const std::int64_t n = static_cast<std::int64_t>(Y.extent(1));
  Kokkos::parallel_for(
      where, Impl::flat_policy(space, Y.extent(0) * Y.extent(1)), KOKKOS_LAMBDA(std::int64_t k) {
        Y(k / n, k % n) = A(k / n, k % n) + B(k / n, k % n);
      });
}

}  // namespace dchag

#endif
