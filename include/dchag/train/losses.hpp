#ifndef DCHAG_TRAIN_LOSSES_HPP
#define DCHAG_TRAIN_LOSSES_HPP

// Training losses and the forecast metric, each with its hand-written gradient:
//   - latitude-weighted MSE / RMSE of a forecast [B, C, H, W] (ClimaX's lat_weighted_mse with
//     all variables, and lat_weighted_rmse per output variable);
//   - masked MSE of a masked autoencoder's patch predictions [B, L, P] (MAE's forward_loss).
//
// The views are taken as templates (any layout, const or not, in a memory space the execution
// space can access) like the kernels are; the scalar T is the value type of `pred`, and a 16-bit
// T is computed in float (ScalarTraits<T>::compute_type), rounded once into dpred. Sums are
// accumulated in double whatever T is: a float loss over millions of pixels would otherwise
// lose the small errors that matter late in training, and the value is logged and compared
// across partitionings. A non-finite loss means NaN or Inf in the inputs (a diverged model or a
// corrupt sample); it is reported as a dchag::Error naming the loss rather than propagated into
// the gradients and the optimiser state.

#include <Kokkos_Core.hpp>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include <dchag/core/error.hpp>
#include <dchag/core/kokkos_compat.hpp>
#include <dchag/core/scalar_traits.hpp>
#include <dchag/core/view.hpp>
#include <dchag/kernels/reductions.hpp>

namespace dchag {
namespace Impl {

template <class ExecSpace, class View, unsigned Rank>
constexpr void static_check_loss_view() {
  static_assert(Kokkos::is_view<View>::value, "dchag losses take Kokkos views");
  static_assert(unsigned(View::rank) == Rank, "dchag losses: view of the wrong rank");
  static_assert(Kokkos::SpaceAccessibility<ExecSpace, typename View::memory_space>::accessible,
                "dchag losses: view not accessible from the execution space");
}

template <class Grad>
constexpr void static_check_grad_view() {
  static_assert(!std::is_const<typename Grad::value_type>::value,
                "dchag losses: the gradient view dpred must be writable");
}

template <class A, class B>
void require_loss_shape(const char* where, const char* a_name, const A& a, const char* b_name,
                        const B& b) {
  bool same = true;
  for (unsigned r = 0; r < A::rank; ++r) same = same && a.extent(r) == b.extent(r);
  require(same, where, ": ", b_name, " ", shape_of(b), " must have the shape of ", a_name, " ",
          shape_of(a));
}

inline void require_finite_loss(const char* where, double value) {
  require(std::isfinite(value), where, ": the loss is ", value,
          " (NaN or Inf in pred or target: a diverged model or a corrupt sample)");
}

// Shared checks of the [B, C, H, W] forecast losses.
template <class Pred, class Target, class Weights>
void check_forecast_loss(const char* where, const Pred& pred, const Target& target,
                         const Weights& w_lat) {
  require_nonempty(where, pred);
  require_loss_shape(where, "pred", pred, "target", target);
  require(w_lat.extent(0) == pred.extent(2), where, ": latitude weights ", shape_of(w_lat),
          " must have one entry per row (H = ", pred.extent(2), ") of pred ", shape_of(pred));
}

}  // namespace Impl

// cos(latitude) normalised to mean 1 (ClimaX), one weight per grid row: the area a row of a
// regular lat-lon grid represents shrinks towards the poles, and the mean of 1 keeps the
// weighted loss on the scale of the plain MSE.
template <class T, class ExecSpace>
View1<T, ExecSpace> latitude_weights(const std::vector<double>& lat_degrees) {
  const char* where = "dchag::latitude_weights";
  Impl::require(!lat_degrees.empty(), where, ": no latitudes given");
  const double pi = 3.14159265358979323846;
  std::vector<double> w(lat_degrees.size());
  double mean = 0;
  for (std::size_t i = 0; i < w.size(); ++i) {
    const double lat = lat_degrees[i];
    Impl::require(std::isfinite(lat) && lat >= -90.0 && lat <= 90.0, where, ": latitude ", i,
                  " is ", lat, " degrees, expected a value in [-90, 90]");
    w[i] = std::cos(lat * pi / 180.0);
    mean += w[i];
  }
  mean /= static_cast<double>(w.size());
  Impl::require(mean > 1e-8, where, ": the latitudes are all at the poles (mean cos = ", mean,
                "); the weights cannot be normalised");
  View1<T, ExecSpace> weights("w_lat", w.size());
  auto host = Kokkos::create_mirror_view(weights);
  for (std::size_t i = 0; i < w.size(); ++i) host(i) = static_cast<T>(w[i] / mean);
  Kokkos::deep_copy(weights, host);
  return weights;
}

namespace Impl {
// The losses without their finiteness check, for the trainers: they check the loss after
// averaging it over the ranks, so that NaN on one rank stops every rank instead of leaving the
// others waiting for it in the backward pass's collectives.
// count: the number of values the mean is over, pred.size() unless pred is one rank's part of
// a prediction split by channel (the loss is then this part's share of the sum over the ranks).
// grad_multiplier: dpred is that many times the loss's gradient (a loss scale: in IEEE half,
// 2 / count of a large prediction underflows unless scaled before it is stored).
template <class ExecSpace, class Pred, class Target, class Weights, class Grad>
double lat_weighted_mse_unchecked(const ExecSpace& space, const Pred& pred, const Target& target,
                                  const Weights& w_lat, const Grad& dpred, double count = 0,
                                  double grad_multiplier = 1) {
  Impl::static_check_loss_view<ExecSpace, Pred, 4>();
  Impl::static_check_loss_view<ExecSpace, Target, 4>();
  Impl::static_check_loss_view<ExecSpace, Weights, 1>();
  Impl::static_check_loss_view<ExecSpace, Grad, 4>();
  Impl::static_check_grad_view<Grad>();
  using T = typename Pred::non_const_value_type;
  const char* where = "dchag::lat_weighted_mse";
  Impl::check_forecast_loss(where, pred, target, w_lat);
  Impl::require_loss_shape(where, "pred", pred, "dpred", dpred);

  const std::int64_t C = pred.extent(1), H = pred.extent(2), W = pred.extent(3);
  const double n = count > 0 ? count : static_cast<double>(pred.size());
  using A = compute_t<T>;
  const A grad_scale = static_cast<A>(2.0 / n * grad_multiplier);
  double sum = 0;
  // One work item per image row (b, c, h): its weight is one value and its W pixels are
  // contiguous, so the inner loop vectorises and no index is split per element.
  Kokkos::parallel_reduce(
      "dchag::lat_weighted_mse", Impl::flat_policy(space, pred.size() / W),
      KOKKOS_LAMBDA(std::int64_t r, double& s) {
        const std::int64_t h = r % H, c = (r / H) % C, b = r / (H * C);
        const A wh = w_lat(h);
        double row = 0;
        for (std::int64_t w = 0; w < W; ++w) {
          const A d = A(pred(b, c, h, w)) - A(target(b, c, h, w));
          dpred(b, c, h, w) = grad_scale * wh * d;
          const double dd = static_cast<double>(pred(b, c, h, w)) -
                            static_cast<double>(target(b, c, h, w));
          row += dd * dd;
        }
        s += static_cast<double>(wh) * row;
      },
      sum);
  return sum / n;
}
}  // namespace Impl

// loss = mean over (b, c, h, w) of w_lat(h) (pred - target)^2; dpred is overwritten with
// dloss/dpred = 2 w_lat(h) (pred - target) / (B C H W).
template <class ExecSpace, class Pred, class Target, class Weights, class Grad>
double lat_weighted_mse(const ExecSpace& space, const Pred& pred, const Target& target,
                        const Weights& w_lat, const Grad& dpred) {
  const char* where = "dchag::lat_weighted_mse";
  const double loss = Impl::lat_weighted_mse_unchecked(space, pred, target, w_lat, dpred);
  Impl::require_finite_loss(where, loss);
  return loss;
}

// The forecast metric, one value per output variable c: the mean over the batch of
// sqrt(mean over (h, w) of w_lat(h) (pred - target)^2). No gradient: it is evaluated, not
// trained on. Callers de-normalise pred and target first (ClimaX's `transform`) to report it in
// physical units.
template <class ExecSpace, class Pred, class Target, class Weights>
std::vector<double> lat_weighted_rmse(const ExecSpace& space, const Pred& pred,
                                      const Target& target, const Weights& w_lat) {
  Impl::static_check_loss_view<ExecSpace, Pred, 4>();
  Impl::static_check_loss_view<ExecSpace, Target, 4>();
  Impl::static_check_loss_view<ExecSpace, Weights, 1>();
  const char* where = "dchag::lat_weighted_rmse";
  Impl::check_forecast_loss(where, pred, target, w_lat);

  const std::int64_t B = pred.extent(0), C = pred.extent(1), H = pred.extent(2),
                     W = pred.extent(3);
  // Two deterministic passes (rows, then images) rather than atomics: the metric is compared
  // across partitionings and backends, so its summation order must not depend on scheduling.
  using Sums = Kokkos::View<double*, MemorySpace<ExecSpace>>;
  Sums rows("dchag::lat_weighted_rmse.rows", B * C * H);
  Sums images("dchag::lat_weighted_rmse.images", B * C);
  Kokkos::parallel_for(
      "dchag::lat_weighted_rmse.rows", Impl::flat_policy(space, rows.size()),
      KOKKOS_LAMBDA(std::int64_t k) {
        const std::int64_t h = k % H, c = (k / H) % C, b = k / (H * C);
        double s = 0;
        for (std::int64_t w = 0; w < W; ++w) {
          const double d = static_cast<double>(pred(b, c, h, w)) -
                           static_cast<double>(target(b, c, h, w));
          s += d * d;
        }
        rows(k) = static_cast<double>(w_lat(h)) * s;
      });
  Kokkos::parallel_for(
      "dchag::lat_weighted_rmse.images", Impl::flat_policy(space, images.size()),
      KOKKOS_LAMBDA(std::int64_t k) {
        double s = 0;
        for (std::int64_t h = 0; h < H; ++h) s += rows(k * H + h);
        images(k) = s;
      });
  auto host = Kokkos::create_mirror_view(images);
  Kokkos::deep_copy(space, host, images);
  space.fence();

  std::vector<double> rmse(C, 0.0);
  const double pixels = static_cast<double>(H * W);
  for (std::int64_t c = 0; c < C; ++c) {
    for (std::int64_t b = 0; b < B; ++b) rmse[c] += std::sqrt(host(b * C + c) / pixels);
    rmse[c] /= static_cast<double>(B);
    Impl::require(std::isfinite(rmse[c]), where, ": the RMSE of output variable ", c, " is ",
                  rmse[c], " (NaN or Inf in pred or target)");
  }
  return rmse;
}

namespace Impl {
// values_per_patch: P of the whole prediction when pred holds one rank's part of every patch
// (its channels' pixels, the prediction split by channel); pred.extent(2) by default.
// grad_multiplier: as for lat_weighted_mse_unchecked.
template <class ExecSpace, class Pred, class Target, class Mask, class Grad>
double masked_mse_unchecked(const ExecSpace& space, const Pred& pred, const Target& target,
                            const Mask& mask, const Grad& dpred, double values_per_patch = 0,
                            double grad_multiplier = 1) {
  Impl::static_check_loss_view<ExecSpace, Pred, 3>();
  Impl::static_check_loss_view<ExecSpace, Target, 3>();
  Impl::static_check_loss_view<ExecSpace, Mask, 2>();
  Impl::static_check_loss_view<ExecSpace, Grad, 3>();
  Impl::static_check_grad_view<Grad>();
  using T = typename Pred::non_const_value_type;
  const char* where = "dchag::masked_mse";
  Impl::require_nonempty(where, pred);
  Impl::require_loss_shape(where, "pred", pred, "target", target);
  Impl::require_loss_shape(where, "pred", pred, "dpred", dpred);
  Impl::require(mask.extent(0) == pred.extent(0) && mask.extent(1) == pred.extent(1), where,
                ": mask ", Impl::shape_of(mask), " must be [B, L] = [", pred.extent(0), ", ",
                pred.extent(1), "] for pred ", Impl::shape_of(pred));

  const std::int64_t L = pred.extent(1), P = pred.extent(2);
  int invalid = 0;
  Kokkos::parallel_reduce(
      "dchag::masked_mse.check_mask", Impl::flat_policy(space, mask.size()),
      KOKKOS_LAMBDA(std::int64_t k, int& bad) {
        const double m = static_cast<double>(mask(k / L, k % L));
        if (m != 0.0 && m != 1.0) ++bad;
      },
      invalid);
  Impl::require(invalid == 0, where, ": mask ", Impl::shape_of(mask), " has ", invalid,
                " entries that are neither 0 (kept) nor 1 (masked)");
  double masked = 0;
  Kokkos::parallel_reduce(
      "dchag::masked_mse.count", Impl::flat_policy(space, mask.size()),
      KOKKOS_LAMBDA(std::int64_t k, double& s) { s += static_cast<double>(mask(k / L, k % L)); },
      masked);
  Impl::require(masked > 0, where, ": mask ", Impl::shape_of(mask),
                " marks no patch as masked (all kept); the loss over masked patches is undefined");

  const double n = masked * (values_per_patch > 0 ? values_per_patch : static_cast<double>(P));
  using A = compute_t<T>;
  const A grad_scale = static_cast<A>(2.0 / n * grad_multiplier);
  double sum = 0;
  // Kept patches are multiplied by 0 rather than skipped, so that NaN anywhere in pred or
  // target still makes the loss non-finite and is reported.
  Kokkos::parallel_reduce(
      "dchag::masked_mse", Impl::flat_policy(space, pred.size()),
      KOKKOS_LAMBDA(std::int64_t k, double& s) {
        const std::int64_t p = k % P, l = (k / P) % L, b = k / (P * L);
        const A m = static_cast<A>(mask(b, l));
        const A d = A(pred(b, l, p)) - A(target(b, l, p));
        dpred(b, l, p) = grad_scale * m * d;
        const double dd =
            static_cast<double>(pred(b, l, p)) - static_cast<double>(target(b, l, p));
        s += static_cast<double>(m) * dd * dd;
      },
      sum);
  return sum / n;
}
}  // namespace Impl

// The masked autoencoder's loss (MAE forward_loss): the squared error is averaged over the P
// values of each patch, then over the masked patches only, because the kept ones were seen by
// the encoder and predicting them is trivial. mask[b, l] is 1 for a masked (removed) patch and
// 0 for a kept one. dpred is overwritten: 2 mask (pred - target) / (P * number masked), so it is
// zero on kept patches.
template <class ExecSpace, class Pred, class Target, class Mask, class Grad>
double masked_mse(const ExecSpace& space, const Pred& pred, const Target& target,
                  const Mask& mask, const Grad& dpred) {
  const char* where = "dchag::masked_mse";
  const double loss = Impl::masked_mse_unchecked(space, pred, target, mask, dpred);
  Impl::require_finite_loss(where, loss);
  return loss;
}

}  // namespace dchag

#endif
