#ifndef DCHAG_KERNELS_LAYER_NORM_HPP
#define DCHAG_KERNELS_LAYER_NORM_HPP

// LayerNorm over the last index of [rows, n] views, as torch.nn.LayerNorm: biased variance,
// y = (x - mean) * rstd * gamma + beta with rstd = 1 / sqrt(var + eps). The forward saves
// mean[rows] and rstd[rows] so that the backward need not recompute the statistics; for 16-bit
// values they are best kept in float (accum_t), which is what the sums run in.

#include <Kokkos_Core.hpp>

#include <dchag/core/error.hpp>
#include <dchag/core/kokkos_compat.hpp>
#include <dchag/core/scalar_traits.hpp>
#include <dchag/kernels/reductions.hpp>

namespace dchag {
namespace Impl {

// One team per row; the variance is a second pass over (x - mean), not E[x^2] - mean^2, which
// cancels catastrophically in float when |mean| >> std.
template <class T, class XV, class GV, class BV, class YV, class MV, class RV>
struct LayerNormForward {
  XV X;
  GV gamma;
  BV beta;
  YV Y;
  MV mean;
  RV rstd;
  T eps;

  template <class Member>
  KOKKOS_INLINE_FUNCTION void operator()(const Member& team) const {
    const int i = team.league_rank();
    const int n = static_cast<int>(X.extent(1));
    T sum;
    Kokkos::parallel_reduce(
        Kokkos::TeamThreadRange(team, n), [&](int j, T& s) { s += X(i, j); }, sum);
    const T mu = sum / T(n);
    T sq;
    Kokkos::parallel_reduce(
        Kokkos::TeamThreadRange(team, n),
        [&](int j, T& s) {
          const T d = X(i, j) - mu;
          s += d * d;
        },
        sq);
    const T r = T(1) / math::sqrt(sq / T(n) + eps);
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, n),
                         [&](int j) { Y(i, j) = (X(i, j) - mu) * r * gamma(j) + beta(j); });
    Kokkos::single(Kokkos::PerTeam(team), [&]() {
      mean(i) = mu;
      rstd(i) = r;
    });
  }
};

// dX = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dY * gamma, one team per row.
template <class T, class XV, class GV, class MV, class RV, class DYV, class DXV>
struct LayerNormBackwardInput {
  XV X;
  GV gamma;
  MV mean;
  RV rstd;
  DYV dY;
  DXV dX;

  template <class Member>
  KOKKOS_INLINE_FUNCTION void operator()(const Member& team) const {
    const int i = team.league_rank();
    const int n = static_cast<int>(X.extent(1));
    const T mu = mean(i), r = rstd(i);
    T sum_g, sum_gx;
    Kokkos::parallel_reduce(
        Kokkos::TeamThreadRange(team, n), [&](int j, T& s) { s += dY(i, j) * gamma(j); }, sum_g);
    Kokkos::parallel_reduce(
        Kokkos::TeamThreadRange(team, n),
        [&](int j, T& s) { s += dY(i, j) * gamma(j) * (X(i, j) - mu) * r; }, sum_gx);
    const T mean_g = sum_g / T(n), mean_gx = sum_gx / T(n);
    // Both reductions have read all of dY before any thread writes, so dX may alias dY.
    Kokkos::parallel_for(Kokkos::TeamThreadRange(team, n), [&](int j) {
      const T xhat = (X(i, j) - mu) * r;
      dX(i, j) = r * (dY(i, j) * gamma(j) - mean_g - xhat * mean_gx);
    });
  }
};

// dgamma(j) += sum_i dY(i, j) * xhat(i, j), dbeta(j) += sum_i dY(i, j); see
// column_chunk() for why one thread owns a chunk of columns. A chunk is `width` <= W columns.
template <int W, class T, class XV, class MV, class RV, class DYV, class DGV, class DBV>
struct LayerNormBackwardParams {
  XV X;
  MV mean;
  RV rstd;
  DYV dY;
  DGV dgamma;
  DBV dbeta;
  int width;

  KOKKOS_INLINE_FUNCTION void operator()(int tile) const {
    const int rows = static_cast<int>(X.extent(0));
    const int n = static_cast<int>(X.extent(1));
    const int j0 = tile * width;
    const int w = n - j0 < width ? n - j0 : width;
    T sg[W], sb[W];
    for (int c = 0; c < W; ++c) sg[c] = sb[c] = T(0);
    for (int i = 0; i < rows; ++i) {
      const T mu = mean(i), r = rstd(i);
      for (int c = 0; c < w; ++c) {
        const T dy = dY(i, j0 + c);
        sg[c] += dy * (X(i, j0 + c) - mu) * r;
        sb[c] += dy;
      }
    }
    for (int c = 0; c < w; ++c) {
      dgamma(j0 + c) += sg[c];
      dbeta(j0 + c) += sb[c];
    }
  }
};

// Host versions of the two row kernels above: one row per work item, the reductions in
// interleaved partial sums and the element loops contiguous, so that both vectorise; the team
// versions ran at a fifth of the memory bandwidth there.
template <class T, class XV, class GV, class BV, class YV, class MV, class RV>
struct LayerNormForwardHost {
  XV X;
  GV gamma;
  BV beta;
  YV Y;
  MV mean;
  RV rstd;
  T eps;

  KOKKOS_INLINE_FUNCTION void operator()(int i) const {
    const int n = static_cast<int>(X.extent(1));
    const T mu = sum_interleaved<T>(n, [&](int j) { return X(i, j); }) / T(n);
    const T sq = sum_interleaved<T>(n, [&](int j) {
      const T d = X(i, j) - mu;
      return d * d;
    });
    const T r = T(1) / math::sqrt(sq / T(n) + eps);
    for (int j = 0; j < n; ++j) Y(i, j) = (X(i, j) - mu) * r * gamma(j) + beta(j);
    mean(i) = mu;
    rstd(i) = r;
  }
};

template <class T, class XV, class GV, class MV, class RV, class DYV, class DXV>
struct LayerNormBackwardInputHost {
  XV X;
  GV gamma;
  MV mean;
  RV rstd;
  DYV dY;
  DXV dX;

  KOKKOS_INLINE_FUNCTION void operator()(int i) const {
    const int n = static_cast<int>(X.extent(1));
    const T mu = mean(i), r = rstd(i);
    // Both sums in one pass over the row, each in the lanes and order of sum_interleaved.
    constexpr int L = 16;
    T sg[L], sgx[L];
    for (int k = 0; k < L; ++k) sg[k] = sgx[k] = T(0);
    int j = 0;
    for (; j + L <= n; j += L)
      for (int k = 0; k < L; ++k) {
        const T g = dY(i, j + k) * gamma(j + k);
        sg[k] += g;
        sgx[k] += g * (X(i, j + k) - mu) * r;
      }
    for (int k = 0; j + k < n; ++k) {
      const T g = dY(i, j + k) * gamma(j + k);
      sg[k] += g;
      sgx[k] += g * (X(i, j + k) - mu) * r;
    }
    for (int w = L / 2; w > 0; w /= 2)
      for (int k = 0; k < w; ++k) {
        sg[k] += sg[k + w];
        sgx[k] += sgx[k + w];
      }
    const T mean_g = sg[0] / T(n), mean_gx = sgx[0] / T(n);
    for (j = 0; j < n; ++j) {
      const T xhat = (X(i, j) - mu) * r;
      dX(i, j) = r * (dY(i, j) * gamma(j) - mean_g - xhat * mean_gx);
    }
  }
};

template <class XV, class PV>
void check_layer_norm_param(const char* where, const XV& X, const char* name, const PV& p) {
  static_assert(PV::rank == 1, "layer norm parameters and statistics are rank-1 views");
  require(p.extent(0) == X.extent(1), where, ": ", name, " = ", shape_of(p),
          " must have one entry per column of X = ", shape_of(X));
}

template <class XV, class SV>
void check_layer_norm_stat(const char* where, const XV& X, const char* name, const SV& s) {
  static_assert(SV::rank == 1, "layer norm parameters and statistics are rank-1 views");
  require(s.extent(0) == X.extent(0), where, ": ", name, " = ", shape_of(s),
          " must have one entry per row of X = ", shape_of(X));
}

template <class XV, class YV>
void check_layer_norm_io(const char* where, const XV& X, const char* name, const YV& Y) {
  static_assert(XV::rank == 2 && YV::rank == 2, "layer norm takes [rows, n] views");
  require_nonempty(where, X);
  require(X.extent(0) == Y.extent(0) && X.extent(1) == Y.extent(1), where, ": X = ",
          shape_of(X), " and ", name, " = ", shape_of(Y), " must have the same shape");
}

}  // namespace Impl

// Y = LayerNorm(X) over each row; mean and rstd receive the row statistics for the backward.
template <class ExecSpace, class XV, class GV, class BV, class YV, class MV, class RV>
void layer_norm(const ExecSpace& space, const XV& X, const GV& gamma, const BV& beta,
                compute_t<typename YV::non_const_value_type> eps, const YV& Y, const MV& mean,
                const RV& rstd) {
  using T = accum_t<typename YV::non_const_value_type>;  // statistics and sums
  const char* where = "dchag::layer_norm";
  Impl::check_layer_norm_io(where, X, "Y", Y);
  Impl::check_layer_norm_param(where, X, "gamma", gamma);
  Impl::check_layer_norm_param(where, X, "beta", beta);
  Impl::check_layer_norm_stat(where, X, "mean", mean);
  Impl::check_layer_norm_stat(where, X, "rstd", rstd);
  constexpr bool host = Kokkos::SpaceAccessibility<ExecSpace, Kokkos::HostSpace>::accessible;
  if constexpr (host) {
    Kokkos::parallel_for(
        "dchag::layer_norm", Kokkos::RangePolicy<ExecSpace>(space, 0, static_cast<int>(X.extent(0))),
        Impl::LayerNormForwardHost<T, XV, GV, BV, YV, MV, RV>{X, gamma, beta, Y, mean, rstd, eps});
    return;
  }
  Kokkos::parallel_for(
      "dchag::layer_norm",
      Kokkos::TeamPolicy<ExecSpace>(space, static_cast<int>(X.extent(0)), Kokkos::AUTO),
      Impl::LayerNormForward<T, XV, GV, BV, YV, MV, RV>{X, gamma, beta, Y, mean, rstd, eps});
}

// dX (overwritten) and dgamma, dbeta (accumulated into) from dY and the saved statistics.
// dX may alias dY.
template <class ExecSpace, class XV, class GV, class MV, class RV, class DYV, class DXV,
          class DGV, class DBV>
void layer_norm_backward(const ExecSpace& space, const XV& X, const GV& gamma, const MV& mean,
                         const RV& rstd, const DYV& dY, const DXV& dX, const DGV& dgamma,
                         const DBV& dbeta) {
  using T = accum_t<typename DXV::non_const_value_type>;  // sums
  const char* where = "dchag::layer_norm_backward";
  Impl::check_layer_norm_io(where, X, "dY", dY);
  Impl::check_layer_norm_io(where, X, "dX", dX);
  Impl::check_layer_norm_param(where, X, "gamma", gamma);
  Impl::check_layer_norm_param(where, X, "dgamma", dgamma);
  Impl::check_layer_norm_param(where, X, "dbeta", dbeta);
  Impl::check_layer_norm_stat(where, X, "mean", mean);
  Impl::check_layer_norm_stat(where, X, "rstd", rstd);
  // The parameter gradients go first: both kernels are queued on `space`, so they run in order
  // and this one has read dY before the next overwrites it when dX aliases dY.
  constexpr bool host = Kokkos::SpaceAccessibility<ExecSpace, Kokkos::HostSpace>::accessible;
  // On host backends chunks of up to W = 1024 columns, as few as keep every thread busy: a
  // chunk spanning whole rows streams X and dY front to back, where 256-column chunks of
  // 512-column rows (skipping half of every row) ran 4 times slower. Each column is still summed
  // over the rows in order, so the chunk width does not change a bit of the result.
  constexpr int W = host ? 1024 : Impl::column_chunk<ExecSpace>();
  const int n = static_cast<int>(X.extent(1));
  int width = W;
  if constexpr (host) {
    const int threads = Impl::concurrency(space);
    const int per_thread = ((n + threads - 1) / threads + 15) / 16 * 16;
    const int least = Impl::column_chunk<ExecSpace>();
    width = per_thread < least ? least : (per_thread > W ? W : per_thread);
  }
  Kokkos::parallel_for(
      "dchag::layer_norm_backward_params",
      Kokkos::RangePolicy<ExecSpace>(space, 0, (n + width - 1) / width),
      Impl::LayerNormBackwardParams<W, T, XV, MV, RV, DYV, DGV, DBV>{X, mean, rstd, dY, dgamma,
                                                                     dbeta, width});
  if constexpr (host) {
    Kokkos::parallel_for(
        "dchag::layer_norm_backward",
        Kokkos::RangePolicy<ExecSpace>(space, 0, static_cast<int>(X.extent(0))),
        Impl::LayerNormBackwardInputHost<T, XV, GV, MV, RV, DYV, DXV>{X, gamma, mean, rstd, dY,
                                                                      dX});
    return;
  }
  Kokkos::parallel_for(
      "dchag::layer_norm_backward",
      Kokkos::TeamPolicy<ExecSpace>(space, static_cast<int>(X.extent(0)), Kokkos::AUTO),
      Impl::LayerNormBackwardInput<T, XV, GV, MV, RV, DYV, DXV>{X, gamma, mean, rstd, dY, dX});
}

}  // namespace dchag

#endif
