#ifndef DCHAG_TRAIN_METRICS_HPP
#define DCHAG_TRAIN_METRICS_HPP

// Forecast skill scores per output variable, the numbers a forecaster compares between a model
// and its baselines (persistence, climatology):
//   - latitude-weighted RMSE, as dchag::lat_weighted_rmse (ClimaX's lat_weighted_rmse): per
//     sample sqrt(mean over (h, w) of w_lat(h) (pred - target)^2), averaged over the samples;
//   - latitude-weighted anomaly correlation coefficient (ACC) against a climatology clim[C, H, W]:
//     anomalies a = pred - clim and a' = target - clim, each with its (unweighted) spatial mean
//     removed, then
//         acc = sum w_lat a a' / sqrt(sum w_lat a^2 * sum w_lat a'^2)   (sums over h, w),
//     averaged over the samples.
//
// ClimaX's lat_weighted_acc removes the mean over the whole batch and pools the batch into one
// correlation, so its value depends on how the test set was cut into batches. Here every sample
// is scored on its own (its own spatial mean removed) and the scores are averaged, as the RMSE
// is: the result is then the same for any batch size and any split of the samples over
// data-parallel ranks, which is what ForecastSkill relies on to sum parts.
//
// A forecast whose anomaly is spatially constant (the climatology itself: a = 0) carries no
// pattern to correlate; its ACC is 0 by definition rather than 0/0. NaN or Inf in any input is
// a dchag::Error.
//
// As in losses.hpp, views are templates (any layout, const or not), sums are in double, and the
// order of every sum is fixed (rows, then images; no atomics) so that results do not depend on
// the backend's scheduling.

#include <Kokkos_Core.hpp>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <dchag/core/error.hpp>
#include <dchag/core/kokkos_compat.hpp>
#include <dchag/core/view.hpp>
#include <dchag/kernels/reductions.hpp>
#include <dchag/parallel/collectives.hpp>
#include <dchag/parallel/communicator.hpp>
#include <dchag/train/losses.hpp>

namespace dchag {
namespace Impl {

// Per image (b, c): [0] sum w (pred - target)^2, [1] sum w a a', [2] sum w a^2, [3] sum w a'^2.
constexpr int kSkillSums = 4;

template <class Pred, class Target, class Clim, class Weights>
void check_skill_inputs(const char* where, const Pred& pred, const Target& target,
                        const Clim& clim, const Weights& w_lat) {
  check_forecast_loss(where, pred, target, w_lat);
  require(clim.extent(0) == pred.extent(1) && clim.extent(1) == pred.extent(2) &&
              clim.extent(2) == pred.extent(3),
          where, ": climatology ", shape_of(clim), " must be [C, H, W] = [", pred.extent(1), ", ",
          pred.extent(2), ", ", pred.extent(3), "] for pred ", shape_of(pred));
}

// The spatial means of both anomalies of every image, [B * C][2].
template <class ExecSpace, class Pred, class Target, class Clim>
Kokkos::View<double**, Kokkos::LayoutRight, MemorySpace<ExecSpace>> anomaly_means(
    const ExecSpace& space, const Pred& pred, const Target& target, const Clim& clim) {
  const std::int64_t B = pred.extent(0), C = pred.extent(1), H = pred.extent(2),
                     W = pred.extent(3);
  using Sums = Kokkos::View<double**, Kokkos::LayoutRight, MemorySpace<ExecSpace>>;
  Sums rows("dchag::forecast_skill.anomaly_rows", B * C * H, 2);
  Sums means("dchag::forecast_skill.anomaly_means", B * C, 2);
  Kokkos::parallel_for(
      "dchag::forecast_skill.anomaly_rows", flat_policy(space, B * C * H),
      KOKKOS_LAMBDA(std::int64_t k) {
        const std::int64_t h = k % H, c = (k / H) % C, b = k / (H * C);
        double sp = 0, sy = 0;
        for (std::int64_t w = 0; w < W; ++w) {
          const double cl = static_cast<double>(clim(c, h, w));
          sp += static_cast<double>(pred(b, c, h, w)) - cl;
          sy += static_cast<double>(target(b, c, h, w)) - cl;
        }
        rows(k, 0) = sp;
        rows(k, 1) = sy;
      });
  const double pixels = static_cast<double>(H * W);
  Kokkos::parallel_for(
      "dchag::forecast_skill.anomaly_means", flat_policy(space, B * C),
      KOKKOS_LAMBDA(std::int64_t k) {
        double sp = 0, sy = 0;
        for (std::int64_t h = 0; h < H; ++h) {
          sp += rows(k * H + h, 0);
          sy += rows(k * H + h, 1);
        }
        means(k, 0) = sp / pixels;
        means(k, 1) = sy / pixels;
      });
  return means;
}

// The kSkillSums sums of every image, on the host: [B * C][kSkillSums].
template <class ExecSpace, class Pred, class Target, class Clim, class Weights>
Kokkos::View<double**, Kokkos::LayoutRight, Kokkos::HostSpace> forecast_image_sums(
    const ExecSpace& space, const Pred& pred, const Target& target, const Clim& clim,
    const Weights& w_lat) {
  const std::int64_t B = pred.extent(0), C = pred.extent(1), H = pred.extent(2),
                     W = pred.extent(3);
  const auto means = anomaly_means(space, pred, target, clim);
  using Sums = Kokkos::View<double**, Kokkos::LayoutRight, MemorySpace<ExecSpace>>;
  Sums rows("dchag::forecast_skill.rows", B * C * H, kSkillSums);
  Sums images("dchag::forecast_skill.images", B * C, kSkillSums);
  Kokkos::parallel_for(
      "dchag::forecast_skill.rows", flat_policy(space, B * C * H),
      KOKKOS_LAMBDA(std::int64_t k) {
        const std::int64_t h = k % H, c = (k / H) % C, b = k / (H * C);
        const std::int64_t image = b * C + c;
        const double mp = means(image, 0), my = means(image, 1);
        double se = 0, py = 0, pp = 0, yy = 0;
        for (std::int64_t w = 0; w < W; ++w) {
          const double p = static_cast<double>(pred(b, c, h, w));
          const double y = static_cast<double>(target(b, c, h, w));
          const double cl = static_cast<double>(clim(c, h, w));
          const double ap = p - cl - mp, ay = y - cl - my;
          se += (p - y) * (p - y);
          py += ap * ay;
          pp += ap * ap;
          yy += ay * ay;
        }
        const double wh = static_cast<double>(w_lat(h));
        rows(k, 0) = wh * se;
        rows(k, 1) = wh * py;
        rows(k, 2) = wh * pp;
        rows(k, 3) = wh * yy;
      });
  Kokkos::parallel_for(
      "dchag::forecast_skill.images", flat_policy(space, B * C), KOKKOS_LAMBDA(std::int64_t k) {
        for (int q = 0; q < kSkillSums; ++q) {
          double s = 0;
          for (std::int64_t h = 0; h < H; ++h) s += rows(k * H + h, q);
          images(k, q) = s;
        }
      });
  auto host = Kokkos::create_mirror_view(images);
  Kokkos::deep_copy(space, host, images);
  space.fence();
  Kokkos::View<double**, Kokkos::LayoutRight, Kokkos::HostSpace> out(
      "dchag::forecast_skill.host", B * C, kSkillSums);
  Kokkos::deep_copy(out, host);
  return out;
}

// One sample's ACC from its sums; 0 where an anomaly has no spatial variance (see the top).
inline double acc_of(double py, double pp, double yy) {
  return pp > 0 && yy > 0 ? py / std::sqrt(pp * yy) : 0.0;
}

}  // namespace Impl

// Latitude-weighted ACC of pred against target [B, C, H, W] with climatology clim [C, H, W],
// one value per output variable (the mean over the B samples). Callers de-normalise pred,
// target and clim alike to report it in physical units; ACC does not change under the affine
// per-variable map of normalisation, so it is the same in either.
template <class ExecSpace, class Pred, class Target, class Clim, class Weights>
std::vector<double> lat_weighted_acc(const ExecSpace& space, const Pred& pred,
                                     const Target& target, const Clim& clim,
                                     const Weights& w_lat) {
  Impl::static_check_loss_view<ExecSpace, Pred, 4>();
  Impl::static_check_loss_view<ExecSpace, Target, 4>();
  Impl::static_check_loss_view<ExecSpace, Clim, 3>();
  Impl::static_check_loss_view<ExecSpace, Weights, 1>();
  const char* where = "dchag::lat_weighted_acc";
  Impl::check_skill_inputs(where, pred, target, clim, w_lat);
  const auto sums = Impl::forecast_image_sums(space, pred, target, clim, w_lat);
  const std::size_t B = pred.extent(0), C = pred.extent(1);
  std::vector<double> acc(C, 0.0);
  for (std::size_t c = 0; c < C; ++c) {
    for (std::size_t b = 0; b < B; ++b) {
      const std::size_t k = b * C + c;
      for (int q = 1; q < Impl::kSkillSums; ++q)
        Impl::require(std::isfinite(sums(k, q)), where, ": output variable ", c, " of sample ",
                      b, " is not finite (NaN or Inf in pred, target or climatology)");
      acc[c] += Impl::acc_of(sums(k, 1), sums(k, 2), sums(k, 3));
    }
    acc[c] /= static_cast<double>(B);
  }
  return acc;
}

// Accumulates the latitude-weighted RMSE and ACC of a forecast, per output variable, over any
// number of batches and data-parallel ranks: each rank add()s its own samples, all_reduce()
// sums the parts over the ranks, and rmse() / acc() are the means over every sample. The sums
// are per sample, so the result is the same whatever the batches and the split over ranks
// (up to the order of a few double additions).
class ForecastSkill {
 public:
  explicit ForecastSkill(int variables) {
    Impl::require(variables > 0, "dchag::ForecastSkill: ", variables,
                  " output variables, expected > 0");
    rmse_sum_.assign(variables, 0.0);
    acc_sum_.assign(variables, 0.0);
  }

  int variables() const { return static_cast<int>(rmse_sum_.size()); }
  // The number of samples scored so far (on every rank, after all_reduce).
  double samples() const { return samples_; }

  // Scores the B samples of pred against target [B, C, H, W], C = variables().
  template <class ExecSpace, class Pred, class Target, class Clim, class Weights>
  void add(const ExecSpace& space, const Pred& pred, const Target& target, const Clim& clim,
           const Weights& w_lat) {
    Impl::static_check_loss_view<ExecSpace, Pred, 4>();
    Impl::static_check_loss_view<ExecSpace, Target, 4>();
    Impl::static_check_loss_view<ExecSpace, Clim, 3>();
    Impl::static_check_loss_view<ExecSpace, Weights, 1>();
    const char* where = "dchag::ForecastSkill::add";
    Impl::require(!reduced_, where, ": the skill was already summed over the ranks");
    Impl::check_skill_inputs(where, pred, target, clim, w_lat);
    Impl::require(pred.extent(1) == rmse_sum_.size(), where, ": pred ", Impl::shape_of(pred),
                  " has ", pred.extent(1), " output variables, expected ", rmse_sum_.size());
    const auto sums = Impl::forecast_image_sums(space, pred, target, clim, w_lat);
    const std::size_t B = pred.extent(0), C = pred.extent(1);
    const double pixels = static_cast<double>(pred.extent(2) * pred.extent(3));
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t c = 0; c < C; ++c) {
        const std::size_t k = b * C + c;
        for (int q = 0; q < Impl::kSkillSums; ++q)
          Impl::require(std::isfinite(sums(k, q)), where, ": output variable ", c, " of sample ",
                        b, " is not finite (NaN or Inf in pred, target or climatology)");
        rmse_sum_[c] += std::sqrt(sums(k, 0) / pixels);
        acc_sum_[c] += Impl::acc_of(sums(k, 1), sums(k, 2), sums(k, 3));
      }
    samples_ += static_cast<double>(B);
  }

  // Collective over `comm` (the data-parallel ranks, each with its own samples): afterwards
  // every rank holds the totals. Ranks that hold copies of the same samples (tensor-parallel
  // peers) must not be in `comm`, or their samples count more than once.
  void all_reduce(const Communicator& comm) {
    Impl::require(!reduced_, "dchag::ForecastSkill::all_reduce: already summed over the ranks");
    using Host = Kokkos::DefaultHostExecutionSpace;
    const std::size_t C = rmse_sum_.size();
    Kokkos::View<double*, Kokkos::HostSpace> parts("dchag::ForecastSkill.parts", 2 * C + 1);
    for (std::size_t c = 0; c < C; ++c) {
      parts(c) = rmse_sum_[c];
      parts(C + c) = acc_sum_[c];
    }
    parts(2 * C) = samples_;
    all_reduce_sum(Host(), comm, parts);
    for (std::size_t c = 0; c < C; ++c) {
      rmse_sum_[c] = parts(c);
      acc_sum_[c] = parts(C + c);
    }
    samples_ = parts(2 * C);
    reduced_ = true;
  }

  // Adds the samples another ForecastSkill scored: the same as all_reduce() over the ranks
  // that hold the parts, without a communicator (parts scored one after another on one rank).
  void merge(const ForecastSkill& other) {
    const char* where = "dchag::ForecastSkill::merge";
    Impl::require(!reduced_, where, ": already summed over the ranks");
    Impl::require(other.rmse_sum_.size() == rmse_sum_.size(), where, ": ", other.variables(),
                  " output variables, expected ", variables());
    for (std::size_t c = 0; c < rmse_sum_.size(); ++c) {
      rmse_sum_[c] += other.rmse_sum_[c];
      acc_sum_[c] += other.acc_sum_[c];
    }
    samples_ += other.samples_;
  }

  std::vector<double> rmse() const { return mean_of(rmse_sum_, "rmse"); }
  std::vector<double> acc() const { return mean_of(acc_sum_, "acc"); }

 private:
  std::vector<double> mean_of(const std::vector<double>& sums, const char* what) const {
    Impl::require(samples_ > 0, "dchag::ForecastSkill::", what,
                  ": no samples were scored (an empty evaluation split?)");
    std::vector<double> out(sums.size());
    for (std::size_t c = 0; c < sums.size(); ++c) out[c] = sums[c] / samples_;
    return out;
  }

  std::vector<double> rmse_sum_, acc_sum_;
  double samples_ = 0;
  bool reduced_ = false;
};

}  // namespace dchag

#endif
