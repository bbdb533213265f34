#ifndef DCHAG_KERNELS_CHANNEL_ROWS_HPP
#define DCHAG_KERNELS_CHANNEL_ROWS_HPP

// A bias per channel on channel-major tokens T[C, N, D]: row c of E[C, D] is added to every
// token of channel c, and its gradient is the sum of channel c's N token rows. kernels/bias.hpp
// adds one row to every row of a matrix; here the row depends on the channel, which would
// otherwise take C launches of it. The patch-embedding bias, var_embed and the lead-time
// embedding (samples in place of channels) all take this form.

#include <Kokkos_Core.hpp>
#include <cstdint>

#include <dchag/core/error.hpp>
#include <dchag/core/scalar_traits.hpp>
#include <dchag/kernels/reductions.hpp>

namespace dchag {
namespace Impl {

// db(c, j) += sum_n dY(c, n, j). One thread per (c, tile of columns), rows summed in order:
// race-free and bitwise reproducible, as SumRows in kernels/bias.hpp (see column_chunk()).
template <int W, class T, class DYV, class DBV>
struct SumChannelRows {
  DYV dY;
  DBV db;
  int tiles;

  KOKKOS_INLINE_FUNCTION void operator()(int t) const {
    const int c = t / tiles;
    const int j0 = (t % tiles) * W;
    const int rows = static_cast<int>(dY.extent(1));
    const int n = static_cast<int>(dY.extent(2));
    const int w = n - j0 < W ? n - j0 : W;
    T s[W];
    for (int k = 0; k < W; ++k) s[k] = T(0);
    if (dY.stride(2) == 1) {
      // Contiguous rows (the usual layout): through a pointer, which compilers vectorise
      // where the three-index view access is not.
      const auto* const base = &dY(c, 0, j0);
      const std::ptrdiff_t step = dY.stride(1);
      for (int i = 0; i < rows; ++i) {
        const auto* const row = base + i * step;
        for (int k = 0; k < w; ++k) s[k] += row[k];
      }
    } else {
      for (int i = 0; i < rows; ++i)
        for (int k = 0; k < w; ++k) s[k] += dY(c, i, j0 + k);
    }
    for (int k = 0; k < w; ++k) db(c, j0 + k) += s[k];
  }
};

template <class YV, class EV>
void check_channel_rows(const char* where, const YV& Y, const EV& E) {
  static_assert(YV::rank == 3 && EV::rank == 2, "channel-row kernels take [C, N, D] and [C, D]");
  require_nonempty(where, Y);
  require(E.extent(0) == Y.extent(0) && E.extent(1) == Y.extent(2), where, ": ", shape_of(E),
          " must hold one row per channel of ", shape_of(Y));
}

}  // namespace Impl

// Y(c, n, j) += E(c, j): a per-channel bias (patch-embedding bias, var_embed, lead time).
template <class ExecSpace, class YV, class EV>
void add_channel_rows(const ExecSpace& space, const YV& Y, const EV& E) {
  Impl::check_channel_rows("dchag::add_channel_rows", Y, E);
  const std::int64_t N = static_cast<std::int64_t>(Y.extent(1));
  Impl::for_each_row_segment(
      "dchag::add_channel_rows", space, Y.extent(0) * Y.extent(1), Y.extent(2),
      KOKKOS_LAMBDA(std::int64_t r, std::int64_t j0, std::int64_t j1) {
        const std::int64_t c = r / N, n = r % N;
        for (std::int64_t j = j0; j < j1; ++j) Y(c, n, j) += E(c, j);
      });
}

// G(c, j) += sum_n dY(c, n, j): the matching gradient, accumulated.
template <class ExecSpace, class DYV, class GV>
void sum_channel_rows(const ExecSpace& space, const DYV& dY, const GV& G) {
  using T = accum_t<typename GV::non_const_value_type>;  // the column sums
  Impl::check_channel_rows("dchag::sum_channel_rows", dY, G);
  constexpr int W = Impl::column_chunk<ExecSpace>();
  const int tiles = static_cast<int>((dY.extent(2) + W - 1) / W);
  Kokkos::parallel_for(
      "dchag::sum_channel_rows",
      Kokkos::RangePolicy<ExecSpace>(space, 0, static_cast<int>(dY.extent(0)) * tiles),
      Impl::SumChannelRows<W, T, DYV, GV>{dY, G, tiles});
}

}  // namespace dchag

#endif
