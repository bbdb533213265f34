#ifndef DCHAG_KERNELS_MASKING_HPP
#define DCHAG_KERNELS_MASKING_HPP

// Random token masking of a masked autoencoder (MAE, He et al. 2021) and the row moves it needs
// on token matrices x[B*L, D] (row b*L + l):
//   - gather_tokens:   the kept tokens of every sample, packed [B*Lk, D] (row b*Lk + k);
//   - scatter_tokens:  the reverse, back to [B*L, D] with a fill row (the decoder's mask token)
//                      or zeros at the masked positions; with zeros it is gather's adjoint;
//   - sum_masked_rows: the fill row's gradient, the column sums over the masked rows.
// Which tokens are kept is described twice, each form serving one direction without search:
//   ids_keep(b, k) = position l of the k-th kept token of sample b (ascending),
//   slot(b, l)     = k if position l of sample b is kept, -1 if it is masked.
//
// The choice itself is made on the host by random_kept_positions(): a pure function of (seed,
// mask step, global sample index) through the counter-based CounterRng of core/random.hpp, so
// that every rank of a tensor-parallel group draws the same mask without communicating, a run
// can be reproduced, and a gradient check can hold the mask fixed.

#include <Kokkos_Core.hpp>
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include <dchag/core/error.hpp>
#include <dchag/core/random.hpp>
#include <dchag/core/scalar_traits.hpp>
#include <dchag/kernels/reductions.hpp>

namespace dchag {
namespace Impl {

// The random stream of MAE masks, apart from every parameter's (those use parameter names).
inline std::uint64_t mask_stream(std::uint64_t mask_step) {
  return mix64(stream_id("dchag.mae.mask") ^ mix64(mask_step + golden_gamma));
}

template <class XV, class IdsV, class SlotV>
void check_token_maps(const char* where, const XV& full, const IdsV& ids_keep,
                      const SlotV& slot) {
  static_assert(XV::rank == 2 && IdsV::rank == 2 && SlotV::rank == 2,
                "token masking takes [B*L, D] tokens and [B, Lk] / [B, L] index maps");
  require(ids_keep.extent(0) == slot.extent(0) && ids_keep.extent(1) <= slot.extent(1), where,
          ": kept ids ", shape_of(ids_keep), " and slots ", shape_of(slot),
          " must describe the same batch, with at most L kept tokens per sample");
  require(full.extent(0) == slot.extent(0) * slot.extent(1), where, ": tokens ",
          shape_of(full), " must be [B*L, D] with B = ", slot.extent(0), ", L = ",
          slot.extent(1));
}

template <class FullV, class KeptV, class IdsV>
void check_kept_tokens(const char* where, const FullV& full, const KeptV& kept,
                       const IdsV& ids_keep) {
  require(kept.extent(0) == ids_keep.extent(0) * ids_keep.extent(1) &&
              kept.extent(1) == full.extent(1),
          where, ": kept tokens ", shape_of(kept), " must be [B*Lk, D] = [",
          ids_keep.extent(0) * ids_keep.extent(1), ", ", full.extent(1), "] for tokens ",
          shape_of(full));
}

// The fill of scatter_tokens' adjoint form: a view-like functor that is zero everywhere.
template <class T>
struct ZeroRow {
  KOKKOS_INLINE_FUNCTION T operator()(std::int64_t) const { return T(0); }
};

// out(b*L + l, j) = kept(b*Lk + slot(b, l), j), or fill(j) where slot(b, l) < 0.
template <class ExecSpace, class KeptV, class SlotV, class Fill, class OutV>
void scatter_tokens_impl(const ExecSpace& space, const KeptV& kept, std::size_t kept_per_sample,
                         const SlotV& slot, const Fill& fill, const OutV& out) {
  using T = typename OutV::non_const_value_type;
  const std::int64_t L = static_cast<std::int64_t>(slot.extent(1));
  const std::int64_t Lk = static_cast<std::int64_t>(kept_per_sample);
  const std::int64_t D = static_cast<std::int64_t>(out.extent(1));
  Kokkos::parallel_for(
      "dchag::scatter_tokens", flat_policy(space, out.extent(0) * out.extent(1)),
      KOKKOS_LAMBDA(std::int64_t i) {
        const std::int64_t row = i / D, j = i % D;
        const std::int64_t b = row / L;
        const int k = slot(b, row % L);
        out(row, j) = k >= 0 ? T(kept(b * Lk + k, j)) : T(fill(j));
      });
}

}  // namespace Impl

// The Lk positions kept from L for one sample, ascending: the Lk smallest of L random keys
// (MAE's argsort of uniform noise), ties broken by position. A pure function of its arguments;
// `sample` is the sample's index in the global batch, so that data-parallel ranks holding
// different samples draw different masks and the masks do not depend on the partition.
inline std::vector<int> random_kept_positions(std::uint64_t seed, std::uint64_t mask_step,
                                              std::uint64_t sample, int L, int Lk) {
  Impl::require(L > 0 && Lk >= 0 && Lk <= L, "dchag::random_kept_positions: cannot keep ", Lk,
                " of ", L, " positions");
  const CounterRng rng(seed, Impl::mask_stream(mask_step));
  std::vector<std::uint64_t> key(static_cast<std::size_t>(L));
  for (int l = 0; l < L; ++l) key[l] = rng.bits(sample * std::uint64_t(L) + std::uint64_t(l));
  std::vector<int> order(static_cast<std::size_t>(L));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + Lk, order.end(), [&](int a, int b) {
    return key[a] != key[b] ? key[a] < key[b] : a < b;
  });
  order.resize(static_cast<std::size_t>(Lk));
  std::sort(order.begin(), order.end());
  return order;
}

// kept(b*Lk + k, j) = x(b*L + ids_keep(b, k), j)
template <class ExecSpace, class XV, class IdsV, class SlotV, class KeptV>
void gather_tokens(const ExecSpace& space, const XV& x, const IdsV& ids_keep, const SlotV& slot,
                   const KeptV& kept) {
  const char* where = "dchag::gather_tokens";
  Impl::check_token_maps(where, x, ids_keep, slot);
  Impl::check_kept_tokens(where, x, kept, ids_keep);
  const std::int64_t L = static_cast<std::int64_t>(slot.extent(1));
  const std::int64_t Lk = static_cast<std::int64_t>(ids_keep.extent(1));
  const std::int64_t D = static_cast<std::int64_t>(kept.extent(1));
  if (Lk == 0) return;
  Kokkos::parallel_for(
      where, Impl::flat_policy(space, kept.extent(0) * kept.extent(1)),
      KOKKOS_LAMBDA(std::int64_t i) {
        const std::int64_t row = i / D, j = i % D;
        const std::int64_t b = row / Lk;
        kept(row, j) = x(b * L + ids_keep(b, row % Lk), j);
      });
}

// out(b*L + l, :) = kept(b*Lk + k, :) where position l is kept as the k-th token, fill(:)
// elsewhere: MAE's un-shuffle with mask tokens.
template <class ExecSpace, class KeptV, class IdsV, class SlotV, class FillV, class OutV>
void scatter_tokens(const ExecSpace& space, const KeptV& kept, const IdsV& ids_keep,
                    const SlotV& slot, const FillV& fill, const OutV& out) {
  const char* where = "dchag::scatter_tokens";
  Impl::check_token_maps(where, out, ids_keep, slot);
  Impl::check_kept_tokens(where, out, kept, ids_keep);
  Impl::require(fill.extent(0) == out.extent(1), where, ": fill ", Impl::shape_of(fill),
                " must have one entry per column of ", Impl::shape_of(out));
  Impl::scatter_tokens_impl(space, kept, ids_keep.extent(1), slot, fill, out);
}

// The same with zeros at the masked positions: the adjoint of gather_tokens.
template <class ExecSpace, class KeptV, class IdsV, class SlotV, class OutV>
void scatter_tokens(const ExecSpace& space, const KeptV& kept, const IdsV& ids_keep,
                    const SlotV& slot, const OutV& out) {
  const char* where = "dchag::scatter_tokens";
  Impl::check_token_maps(where, out, ids_keep, slot);
  Impl::check_kept_tokens(where, out, kept, ids_keep);
  using T = typename OutV::non_const_value_type;
  Impl::scatter_tokens_impl(space, kept, ids_keep.extent(1), slot, Impl::ZeroRow<T>{}, out);
}

// dfill(j) += sum of dx(b*L + l, j) over the masked positions (slot(b, l) < 0). One thread per
// column sums the rows in order: no atomics, bitwise reproducible (as the bias gradients).
template <class ExecSpace, class DXV, class SlotV, class DFillV>
void sum_masked_rows(const ExecSpace& space, const DXV& dx, const SlotV& slot,
                     const DFillV& dfill) {
  using T = accum_t<typename DFillV::non_const_value_type>;  // the column sums
  const char* where = "dchag::sum_masked_rows";
  Impl::require(dx.extent(0) == slot.extent(0) * slot.extent(1) &&
                    dfill.extent(0) == dx.extent(1),
                where, ": gradient ", Impl::shape_of(dx), " must be [B*L, D] and ",
                Impl::shape_of(dfill), " [D] for slots ", Impl::shape_of(slot));
  const std::int64_t L = static_cast<std::int64_t>(slot.extent(1));
  const std::int64_t rows = static_cast<std::int64_t>(dx.extent(0));
  Kokkos::parallel_for(
      where, Impl::flat_policy(space, dfill.extent(0)), KOKKOS_LAMBDA(std::int64_t j) {
        T s = T(0);
        for (std::int64_t row = 0; row < rows; ++row)
          if (slot(row / L, row % L) < 0) s += T(dx(row, j));
        dfill(j) += s;
      });
}

}  // namespace dchag

#endif
