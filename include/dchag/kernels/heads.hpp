#ifndef DCHAG_KERNELS_HEADS_HPP
#define DCHAG_KERNELS_HEADS_HPP

// Moving attention operands between the token layout of the projections, [B*L, sections*width]
// with width = heads*head_dim (timm's qkv Linear: q|k|v stacked, heads contiguous inside each),
// and the per-(sample, head) layout of the batched products, [B*heads, L, head_dim], in which
// every (sample, head) is one contiguous matrix that a BLAS call can take directly.

#include <Kokkos_Core.hpp>
#include <cstdint>

#include <dchag/core/error.hpp>
#include <dchag/kernels/reductions.hpp>

namespace dchag {
namespace Impl {

// The index map both directions share, walked from the token side: columns [j0, j1) of the
// section in token row `row` split into runs that stay inside one head, and f(bh, l, j, col,
// len) gets each: per-head elements (bh, l, j .. j+len) are token elements (row, col .. col+len).
struct HeadLayout {
  std::int64_t L, heads, head_dim, col0;

  template <class F>
  KOKKOS_INLINE_FUNCTION void for_each_run(std::int64_t row, std::int64_t j0, std::int64_t j1,
                                           const F& f) const {
    const std::int64_t b = row / L, l = row % L;
    for (std::int64_t c = j0; c < j1;) {
      const std::int64_t h = c / head_dim, end = (h + 1) * head_dim < j1 ? (h + 1) * head_dim : j1;
      f(b * heads + h, l, c - h * head_dim, col0 + c, end - c);
      c = end;
    }
  }
};

template <class TV, class HV>
void check_heads(const char* where, const TV& tokens, const HV& per_head, long long section,
                 long long batch, long long heads, long long head_dim) {
  static_assert(TV::rank == 2 && HV::rank == 3,
                "head kernels take a [B*L, sections*width] and a [B*heads, L, head_dim] view");
  require(batch > 0 && heads > 0 && head_dim > 0, where, ": batch = ", batch, ", heads = ",
          heads, " and head_dim = ", head_dim, " must be positive");
  require_nonempty(where, tokens);
  require_nonempty(where, per_head);
  const long long width = heads * head_dim;
  const long long L = static_cast<long long>(per_head.extent(1));
  require(static_cast<long long>(per_head.extent(0)) == batch * heads &&
              static_cast<long long>(per_head.extent(2)) == head_dim,
          where, ": per-head view ", shape_of(per_head), " must be [batch*heads = ",
          batch * heads, ", L, head_dim = ", head_dim, "]");
  require(static_cast<long long>(tokens.extent(0)) == batch * L, where, ": token view ",
          shape_of(tokens), " must have batch*L = ", batch, "*", L, " = ", batch * L,
          " rows to match the per-head view ", shape_of(per_head));
  const long long cols = static_cast<long long>(tokens.extent(1));
  require(cols % width == 0, where, ": token view ", shape_of(tokens),
          " is not a whole number of sections of heads*head_dim = ", heads, "*", head_dim, " = ",
          width, " columns");
  require(section >= 0 && section < cols / width, where, ": section ", section,
          " is out of range: token view ", shape_of(tokens), " holds ", cols / width,
          " sections of ", width, " columns");
}

}  // namespace Impl

// dst[b*heads + h, l, j] = src[b*L + l, section*heads*head_dim + h*head_dim + j].
template <class ExecSpace, class SrcView, class DstView>
void split_heads(const ExecSpace& space, const SrcView& src, int section, int batch, int heads,
                 int head_dim, const DstView& dst) {
  Impl::check_heads("dchag::split_heads", src, dst, section, batch, heads, head_dim);
  const std::int64_t L = static_cast<std::int64_t>(dst.extent(1));
  const Impl::HeadLayout map{L, heads, head_dim,
                             std::int64_t(section) * std::int64_t(heads) * head_dim};
  // Row segments of the token matrix (for_each_row_segment): on GPUs consecutive threads take
  // consecutive columns of one src row and of one dst row, so both sides of the copy are
  // coalesced; on the host each run is a contiguous copy.
  Impl::for_each_row_segment(
      "dchag::split_heads", space, src.extent(0), std::size_t(heads) * head_dim,
      KOKKOS_LAMBDA(std::int64_t row, std::int64_t j0, std::int64_t j1) {
        map.for_each_run(row, j0, j1,
                         [&](std::int64_t bh, std::int64_t l, std::int64_t j, std::int64_t col,
                             std::int64_t len) {
                           for (std::int64_t k = 0; k < len; ++k) dst(bh, l, j + k) = src(row, col + k);
                         });
      });
}

// The inverse of split_heads: writes only the columns of `section`, so that q, k and v (or
// their gradients) are merged into one [B*L, 3*width] matrix by three calls. batch and heads
// follow from the shapes: B = dst rows / L, heads = src.extent(0) / B.
template <class ExecSpace, class SrcView, class DstView>
void merge_heads(const ExecSpace& space, const SrcView& src, const DstView& dst, int section) {
  const char* where = "dchag::merge_heads";
  static_assert(SrcView::rank == 3 && DstView::rank == 2,
                "merge_heads takes a [B*heads, L, head_dim] and a [B*L, sections*width] view");
  Impl::require_nonempty(where, src);
  Impl::require_nonempty(where, dst);
  const std::size_t L = src.extent(1);
  Impl::require(dst.extent(0) % L == 0 && src.extent(0) % (dst.extent(0) / L) == 0, where,
                ": token view ", Impl::shape_of(dst), " and per-head view ", Impl::shape_of(src),
                " do not describe the same batch of ", L, " tokens per sample");
  const long long batch = static_cast<long long>(dst.extent(0) / L);
  const long long heads = static_cast<long long>(src.extent(0)) / batch;
  const long long head_dim = static_cast<long long>(src.extent(2));
  Impl::check_heads(where, dst, src, section, batch, heads, head_dim);
  const Impl::HeadLayout map{static_cast<std::int64_t>(L), heads, head_dim,
                             std::int64_t(section) * heads * head_dim};
  Impl::for_each_row_segment(
      "dchag::merge_heads", space, dst.extent(0), std::size_t(heads * head_dim),
      KOKKOS_LAMBDA(std::int64_t row, std::int64_t j0, std::int64_t j1) {
        map.for_each_run(row, j0, j1,
                         [&](std::int64_t bh, std::int64_t l, std::int64_t j, std::int64_t col,
                             std::int64_t len) {
                           for (std::int64_t k = 0; k < len; ++k) dst(row, col + k) = src(bh, l, j + k);
                         });
      });
}

}  // namespace dchag

#endif
