#ifndef DCHAG_KERNELS_CROSS_ATTENTION_HPP
#define DCHAG_KERNELS_CROSS_ATTENTION_HPP

// The attention of one learnable query against K key/value tokens per row, forward and
// backward, for QueryCrossAttention (layers/cross_attention.hpp). The k|v projections around
// them are GEMMs and the softmax between scores and context is kernels/softmax.hpp; these are
// the rest: the projection of the single query vector, the per-head scores against keys that
// lie N rows apart, the weighted sum of the values, and their gradients.
//
// They live in Impl: their layouts are that layer's (k | v side by side in one matrix, the
// query projection as the first rows of in_proj), not a general interface. Free functions
// rather than members because CUDA refuses extended lambdas inside private member functions.

#include <Kokkos_Core.hpp>
#include <cstdint>

#include <dchag/core/scalar_traits.hpp>
#include <dchag/kernels/reductions.hpp>

namespace dchag {
namespace Impl {

// Shapes: q[I] (I = heads*hd), kv[K*N, 2I] (row c*N + n, k | v), attn[N*heads, K]
// (row n*heads + h), ctx[N, I].
struct CrossAttentionShape {
  std::int64_t K, N, H, hd;
  KOKKOS_INLINE_FUNCTION std::int64_t inner() const { return H * hd; }
};

// q(i) = bq(i) + sum_d Wq(i, d) query(d), Wq and bq the first I rows of in_proj.
template <class ExecSpace, class WV, class BV, class XV, class QV>
void cross_attention_query(const ExecSpace& space, const WV& W, const BV& b, const XV& x,
                           const QV& q) {
  using A = accum_t<typename QV::non_const_value_type>;
  const int D = static_cast<int>(x.extent(0));
  Kokkos::parallel_for(
      "dchag::QueryCrossAttention::query",
      Kokkos::RangePolicy<ExecSpace>(space, 0, static_cast<int>(q.extent(0))),
      KOKKOS_LAMBDA(int i) {
        A s = b(i);
        for (int d = 0; d < D; ++d) s += A(W(i, d)) * A(x(d));
        q(i) = s;
      });
}

// On host backends the forward kernels take one work item per row n, which walks the K key
// rows of n one after another (each read contiguously, once); an element per thread, as on
// GPUs, read the keys N rows apart element by element and ran several times slower.
template <class ExecSpace>
constexpr bool cross_attention_by_rows() {
  return Kokkos::SpaceAccessibility<ExecSpace, Kokkos::HostSpace>::accessible;
}

// attn(n*H + h, c) = sum_j q(h*hd + j) k(c*N + n, h*hd + j)   (unscaled; the softmax scales).
template <class ExecSpace, class QV, class KVV, class AV>
void cross_attention_scores(const ExecSpace& space, CrossAttentionShape s, const QV& q,
                            const KVV& kv, const AV& attn) {
  using T = typename AV::non_const_value_type;
  using A = accum_t<T>;
  if constexpr (cross_attention_by_rows<ExecSpace>()) {
    Kokkos::parallel_for(
        "dchag::QueryCrossAttention::scores", flat_policy(space, std::size_t(s.N)),
        KOKKOS_LAMBDA(std::int64_t n) {
          for (std::int64_t c = 0; c < s.K; ++c)
            for (std::int64_t h = 0; h < s.H; ++h) {
              const T* k = &kv(c * s.N + n, h * s.hd);
              const T* qh = &q(h * s.hd);
              attn(n * s.H + h, c) =
                  sum_interleaved<A>(s.hd, [&](std::int64_t j) { return A(qh[j]) * A(k[j]); });
            }
        });
  } else {
    Kokkos::parallel_for(
        "dchag::QueryCrossAttention::scores", flat_policy(space, attn.size()),
        KOKKOS_LAMBDA(std::int64_t e) {
          const std::int64_t c = e % s.K, nh = e / s.K, n = nh / s.H, h = nh % s.H;
          A acc = 0;
          for (std::int64_t j = 0; j < s.hd; ++j)
            acc += A(q(h * s.hd + j)) * A(kv(c * s.N + n, h * s.hd + j));
          attn(nh, c) = acc;
        });
  }
}

// ctx(n, h*hd + j) = sum_c attn(n*H + h, c) v(c*N + n, h*hd + j). On the host, blocks of up to
// 64 elements of a head are summed over c in accum_t registers, so a 16-bit ctx is rounded
// once and not after each of the K terms.
template <class ExecSpace, class AV, class KVV, class CV>
void cross_attention_context(const ExecSpace& space, CrossAttentionShape s, const AV& attn,
                             const KVV& kv, const CV& ctx) {
  using T = typename CV::non_const_value_type;
  using A = accum_t<T>;
  if constexpr (cross_attention_by_rows<ExecSpace>()) {
    Kokkos::parallel_for(
        "dchag::QueryCrossAttention::context", flat_policy(space, std::size_t(s.N)),
        KOKKOS_LAMBDA(std::int64_t n) {
          constexpr std::int64_t Block = 64;
          const std::int64_t I = s.inner();
          T* out = &ctx(n, 0);
          for (std::int64_t h = 0; h < s.H; ++h)
            for (std::int64_t j0 = h * s.hd; j0 < (h + 1) * s.hd; j0 += Block) {
              const std::int64_t m = (h + 1) * s.hd - j0 < Block ? (h + 1) * s.hd - j0 : Block;
              A acc[Block];
              for (std::int64_t k = 0; k < m; ++k) acc[k] = A(0);
              for (std::int64_t c = 0; c < s.K; ++c) {
                const A a = attn(n * s.H + h, c);
                const T* v = &kv(c * s.N + n, I + j0);
                for (std::int64_t k = 0; k < m; ++k) acc[k] += a * A(v[k]);
              }
              for (std::int64_t k = 0; k < m; ++k) out[j0 + k] = acc[k];
            }
        });
  } else {
    Kokkos::parallel_for(
        "dchag::QueryCrossAttention::context", flat_policy(space, ctx.size()),
        KOKKOS_LAMBDA(std::int64_t e) {
          const std::int64_t I = s.inner(), i = e % I, n = e / I, h = i / s.hd;
          A acc = 0;
          for (std::int64_t c = 0; c < s.K; ++c)
            acc += A(attn(n * s.H + h, c)) * A(kv(c * s.N + n, I + i));
          ctx(n, i) = acc;
        });
  }
}

// dattn(n*H + h, c) = sum_j dctx(n, h*hd + j) v(c*N + n, h*hd + j).
template <class ExecSpace, class DCV, class KVV, class DAV>
void cross_attention_dattn(const ExecSpace& space, CrossAttentionShape s, const DCV& dctx,
                           const KVV& kv, const DAV& dattn) {
  using A = accum_t<typename DAV::non_const_value_type>;
  Kokkos::parallel_for(
      "dchag::QueryCrossAttention::dattn", flat_policy(space, dattn.size()),
      KOKKOS_LAMBDA(std::int64_t e) {
        const std::int64_t c = e % s.K, nh = e / s.K, n = nh / s.H, h = nh % s.H;
        A acc = 0;
        for (std::int64_t j = 0; j < s.hd; ++j)
          acc += A(dctx(n, h * s.hd + j)) * A(kv(c * s.N + n, s.inner() + h * s.hd + j));
        dattn(nh, c) = acc;
      });
}

// Each element of dk | dv has a single source term, so one pass writes both:
// dk(c*N + n, i) = scale * dS(n*H + h, c) q(i),  dv(c*N + n, i) = attn(n*H + h, c) dctx(n, i).
// Walked by row segments, a head block at a time (its factor is one value).
template <class ExecSpace, class QV, class AV, class DSV, class DCV, class DKVV>
void cross_attention_dkv(const ExecSpace& space, CrossAttentionShape s,
                         compute_t<typename DKVV::non_const_value_type> scale, const QV& q,
                         const AV& attn, const DSV& dS, const DCV& dctx, const DKVV& dkv) {
  using T = compute_t<typename DKVV::non_const_value_type>;
  for_each_row_segment(
      "dchag::QueryCrossAttention::dkv", space, dkv.extent(0), dkv.extent(1),
      KOKKOS_LAMBDA(std::int64_t row, std::int64_t j0, std::int64_t j1) {
        const std::int64_t I = s.inner(), c = row / s.N, n = row % s.N;
        for (std::int64_t col = j0; col < j1;) {
          const bool k = col < I;
          const std::int64_t i0 = k ? col : col - I, nh = n * s.H + i0 / s.hd;
          const std::int64_t block_end = col + (s.hd - i0 % s.hd);
          const std::int64_t end = block_end < j1 ? block_end : j1;
          if (k) {
            const T a = scale * dS(nh, c);
            for (; col < end; ++col) dkv(row, col) = a * q(col);
          } else {
            const T a = attn(nh, c);
            for (; col < end; ++col) dkv(row, col) = a * dctx(n, col - I);
          }
        }
      });
}

// dq(i) = scale * sum_{c, n} dS(n*H + h, c) k(c*N + n, i), h = i / hd. The K*N rows of k are
// split into partial.extent(0) fixed chunks: a chunk adds its rows, in order, into its row of
// partial[chunks, I], then dq sums the chunks in order. Every k row is read once and
// contiguously, no two threads add to the same element, and the result does not depend on the
// number of threads. (A reduction over each column of k instead read all of k once per i.)
template <class ExecSpace, class DSV, class KVV, class PV, class DQV>
void cross_attention_dq(const ExecSpace& space, CrossAttentionShape s,
                        compute_t<typename DQV::non_const_value_type> scale, const DSV& dS,
                        const KVV& kv, const PV& partial, const DQV& dq) {
  using T = accum_t<typename DQV::non_const_value_type>;
  const std::int64_t chunks = static_cast<std::int64_t>(partial.extent(0));
  const std::int64_t rows = s.K * s.N;
  Kokkos::parallel_for(
      "dchag::QueryCrossAttention::dq_partial", flat_policy(space, std::size_t(chunks)),
      KOKKOS_LAMBDA(std::int64_t ch) {
        const std::int64_t I = s.inner();
        const std::int64_t r0 = rows * ch / chunks, r1 = rows * (ch + 1) / chunks;
        for (std::int64_t i = 0; i < I; ++i) partial(ch, i) = T(0);
        for (std::int64_t r = r0; r < r1; ++r) {
          const std::int64_t c = r / s.N, n = r % s.N;
          for (std::int64_t h = 0; h < s.H; ++h) {
            const T w = dS(n * s.H + h, c);
            for (std::int64_t j = h * s.hd; j < (h + 1) * s.hd; ++j)
              partial(ch, j) += w * T(kv(r, j));
          }
        }
      });
  Kokkos::parallel_for(
      "dchag::QueryCrossAttention::dq", flat_policy(space, dq.extent(0)),
      KOKKOS_LAMBDA(std::int64_t i) {
        T acc = 0;
        for (std::int64_t ch = 0; ch < chunks; ++ch) acc += T(partial(ch, i));
        dq(i) = scale * acc;
      });
}

// Gradients of q = Wq query + bq:  dWq(i, d) += dq(i) query(d),  dbq(i) += dq(i),
// dquery(d) += sum_i Wq(i, d) dq(i). Every thread owns the elements it adds to.
template <class ExecSpace, class DQV, class XV, class WV, class GWV, class GBV, class GXV>
void cross_attention_query_backward(const ExecSpace& space, const DQV& dq, const XV& x,
                                    const WV& W, const GWV& gW, const GBV& gb, const GXV& gx) {
  using T = accum_t<typename GXV::non_const_value_type>;
  const std::int64_t D = static_cast<std::int64_t>(x.extent(0));
  const std::int64_t I = static_cast<std::int64_t>(dq.extent(0));
  Kokkos::parallel_for(
      "dchag::QueryCrossAttention::dWq", flat_policy(space, std::size_t(I * D)),
      KOKKOS_LAMBDA(std::int64_t e) {
        const std::int64_t i = e / D, d = e % D;
        gW(i, d) += dq(i) * x(d);
        if (d == 0) gb(i) += dq(i);
      });
  Kokkos::parallel_for(
      "dchag::QueryCrossAttention::dquery", Kokkos::RangePolicy<ExecSpace>(space, 0, int(D)),
      KOKKOS_LAMBDA(int d) {
        T acc = 0;
        for (std::int64_t i = 0; i < I; ++i) acc += T(W(i, d)) * T(dq(i));
        gx(d) += acc;
      });
}

}  // namespace Impl
}  // namespace dchag

#endif
