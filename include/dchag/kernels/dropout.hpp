#ifndef DCHAG_KERNELS_DROPOUT_HPP
#define DCHAG_KERNELS_DROPOUT_HPP

// Dropout and drop-path (stochastic depth) on token matrices x[B*L, n] (row b*L + l), with
// masks that are pure functions of what an element *is*, never of where it is stored:
//   dropout:   element (global sample, token, logical feature) is zeroed with probability p,
//   drop_path: every element of a global sample is zeroed with probability p,
// and what survives is scaled by 1 / (1 - p), as torch.nn.Dropout and timm's DropPath do.
//
// The decision is a hash of (site key, global sample, token, feature) compared with an integer
// threshold: no floating point, so every backend, and every rank, draws the same mask. A rank
// that holds rows [b0*L, ...) of the batch passes sample_begin = b0; one that holds feature
// columns [f0, ...) of a wider logical tensor (a column slice of the MLP hidden layer under
// tensor parallelism) passes feature_begin = f0. Then every grid drops exactly the elements the
// single-rank model drops, which is what keeps partition invariance with dropout on.
//
// The key of a site comes from (seed, step, the site's logical name) through the counter-based
// hash of io/counter_rng.hpp, so a mask changes every step and differs between sites, yet is
// reproducible: the backward regenerates it instead of storing it. Both operations are linear
// and diagonal, so the backward is the same call on the gradient.

#include <Kokkos_Core.hpp>
#include <cstdint>
#include <string>

#include <dchag/core/error.hpp>
#include <dchag/core/random.hpp>
#include <dchag/io/counter_rng.hpp>
#include <dchag/core/scalar_traits.hpp>
#include <dchag/kernels/reductions.hpp>

namespace dchag {

// One dropout site in one step: the key its masks are drawn from, and the drop probability.
// rate 0 (the default) is the identity and launches nothing.
struct DropoutSite {
  std::uint64_t key = 0;
  double rate = 0;
  bool active() const { return rate > 0; }
};

// The site `name` (a logical name such as "blocks.3.mlp.drop1") of training step `step`.
inline DropoutSite dropout_site(std::uint64_t seed, std::uint64_t step, const std::string& name,
                                double rate) {
  Impl::require(rate >= 0 && rate < 1, "dropout site '", name,
                "': the drop probability must be in [0, 1), got ", rate);
  return DropoutSite{Impl::hash_key(seed, step, stream_id("dchag.dropout." + name)), rate};
}

namespace Impl {

// SplitMix64's finaliser (mix64 of core/random.hpp), callable in kernels.
KOKKOS_INLINE_FUNCTION std::uint64_t dropout_mix(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// 64 random bits for element (sample, token, feature) of the site with this key; one mixing
// round per coordinate, so neighbouring indices in any coordinate are unrelated.
KOKKOS_INLINE_FUNCTION std::uint64_t dropout_bits(std::uint64_t key, std::uint64_t sample,
                                                  std::uint64_t token, std::uint64_t feature) {
  std::uint64_t h = dropout_mix(key ^ (sample * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL));
  h = dropout_mix(h ^ (token * 0xd6e8feb86659fd93ULL + 0x8cb92ba72f3d8dd7ULL));
  return dropout_mix(h ^ (feature * 0xa0761d6478bd642fULL + 0xe7037ed1a0b428dbULL));
}

// An element is dropped when the top 53 bits of its hash, as k in [0, 2^53), are below
// p * 2^53 (exact: a power-of-two scaling), i.e. with probability p up to 2^-53.
inline std::uint64_t dropout_threshold(double rate) {
  return static_cast<std::uint64_t>(rate * 9007199254740992.0);
}

template <class InV, class OutV>
void check_dropout_views(const char* where, const InV& in, const OutV& out, std::size_t L) {
  static_assert(InV::rank == 2 && OutV::rank == 2, "dropout takes [B*L, n] token matrices");
  require(in.extent(0) == out.extent(0) && in.extent(1) == out.extent(1), where, ": input ",
          shape_of(in), " and output ", shape_of(out), " must have the same shape");
  require(L > 0 && in.extent(0) % L == 0, where, ": ", in.extent(0),
          " rows are not whole samples of L = ", L, " tokens");
}

// out = mask(in); per_sample: one decision per sample (drop-path), else per element.
template <class ExecSpace, class InV, class OutV>
void apply_mask(const char* where, const ExecSpace& space, const DropoutSite& site,
                const InV& in, const OutV& out, std::size_t L, std::uint64_t sample_begin,
                std::uint64_t feature_begin, bool per_sample) {
  check_dropout_views(where, in, out, L);
  if (!site.active()) {
    if (in.data() != out.data()) Kokkos::deep_copy(space, out, in);
    return;
  }
  require(site.rate < 1, where, ": the drop probability must be below 1, got ", site.rate);
  using T = typename OutV::non_const_value_type;
  const std::uint64_t key = site.key, threshold = dropout_threshold(site.rate);
  const compute_t<T> scale = static_cast<compute_t<T>>(1.0 / (1.0 - site.rate));
  const std::int64_t tokens = static_cast<std::int64_t>(L);
  for_each_row_segment(
      where, space, in.extent(0), in.extent(1),
      KOKKOS_LAMBDA(std::int64_t r, std::int64_t j0, std::int64_t j1) {
        const std::uint64_t sample = sample_begin + std::uint64_t(r / tokens);
        const std::uint64_t token = std::uint64_t(r % tokens);
        if (per_sample) {
          const bool keep = (dropout_bits(key, sample, 0, 0) >> 11) >= threshold;
          for (std::int64_t j = j0; j < j1; ++j) out(r, j) = keep ? T(in(r, j) * scale) : T(0);
        } else {
          for (std::int64_t j = j0; j < j1; ++j) {
            const std::uint64_t f = feature_begin + std::uint64_t(j);
            const bool keep = (dropout_bits(key, sample, token, f) >> 11) >= threshold;
            out(r, j) = keep ? T(in(r, j) * scale) : T(0);
          }
        }
      });
}

}  // namespace Impl

// out = dropout(in) on a [B*L, n] token matrix holding samples sample_begin, ... of L tokens
// each and logical features feature_begin, ...; out may be in. The backward is the same call
// on the gradient (same site, same offsets).
template <class ExecSpace, class InV, class OutV>
void dropout(const ExecSpace& space, const DropoutSite& site, const InV& in, const OutV& out,
             std::size_t L, std::uint64_t sample_begin = 0, std::uint64_t feature_begin = 0) {
  Impl::apply_mask("dchag::dropout", space, site, in, out, L, sample_begin, feature_begin, false);
}

// out = drop_path(in): timm's DropPath, whole samples dropped (the residual branch of a block
// skipped for that sample). The backward is the same call on the gradient.
template <class ExecSpace, class InV, class OutV>
void drop_path(const ExecSpace& space, const DropoutSite& site, const InV& in, const OutV& out,
               std::size_t L, std::uint64_t sample_begin = 0) {
  Impl::apply_mask("dchag::drop_path", space, site, in, out, L, sample_begin, 0, true);
}

}  // namespace dchag

#endif
