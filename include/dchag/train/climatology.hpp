#ifndef DCHAG_TRAIN_CLIMATOLOGY_HPP
#define DCHAG_TRAIN_CLIMATOLOGY_HPP

// The climatology of a data set: the mean state per variable and grid point over the training
// split. It is the reference of the anomaly correlation (train/metrics.hpp) and a forecast of
// its own (the climatology forecast, the baseline a model must beat at long leads).
//
// Climatology<ExecSpace> accumulates states [B, C, H, W] in double, one pass, so a split of any
// length never needs to be held in memory; ranks that add different samples combine their
// parts with all_reduce(). mean() is the climatology in the scalar the model uses.
// climatology_forecast() writes it into every sample of a forecast batch.

#include <Kokkos_Core.hpp>
#include <cstdint>

#include <dchag/core/error.hpp>
#include <dchag/core/view.hpp>
#include <dchag/kernels/reductions.hpp>
#include <dchag/parallel/collectives.hpp>
#include <dchag/parallel/communicator.hpp>

namespace dchag {
namespace Impl {

// sum[c, h, w] += sum over b of x[b, c, h, w]. One work item per grid point, the samples in
// order, so the sum does not depend on the backend.
template <class ExecSpace, class Sum, class Batch>
void add_to_climatology(const ExecSpace& space, const Sum& sum, const Batch& x) {
  const std::int64_t B = x.extent(0), C = x.extent(1), H = x.extent(2), W = x.extent(3);
  Kokkos::parallel_for(
      "dchag::Climatology::add", flat_policy(space, C * H * W), KOKKOS_LAMBDA(std::int64_t k) {
        const std::int64_t w = k % W, h = (k / W) % H, c = k / (W * H);
        double s = sum(c, h, w);
        for (std::int64_t b = 0; b < B; ++b) s += static_cast<double>(x(b, c, h, w));
        sum(c, h, w) = s;
      });
}

template <class ExecSpace, class Out, class Sum>
void climatology_mean(const ExecSpace& space, const Out& out, const Sum& sum, double count) {
  using T = typename Out::value_type;
  const std::int64_t H = sum.extent(1), W = sum.extent(2);
  const double inv = 1.0 / count;
  Kokkos::parallel_for(
      "dchag::Climatology::mean", flat_policy(space, sum.size()), KOKKOS_LAMBDA(std::int64_t k) {
        const std::int64_t w = k % W, h = (k / W) % H, c = k / (W * H);
        out(c, h, w) = static_cast<T>(sum(c, h, w) * inv);
      });
}

template <class ExecSpace, class Out, class Clim>
void broadcast_climatology(const ExecSpace& space, const Out& out, const Clim& clim) {
  const std::int64_t C = out.extent(1), H = out.extent(2), W = out.extent(3);
  Kokkos::parallel_for(
      "dchag::climatology_forecast", flat_policy(space, out.size()),
      KOKKOS_LAMBDA(std::int64_t k) {
        const std::int64_t w = k % W, h = (k / W) % H, c = (k / (W * H)) % C,
                           b = k / (W * H * C);
        out(b, c, h, w) = clim(c, h, w);
      });
}

}  // namespace Impl

template <class ExecSpace>
class Climatology {
 public:
  using sum_type = View3<double, ExecSpace>;

  Climatology(int channels, int height, int width) {
    const char* where = "dchag::Climatology";
    Impl::require(channels > 0 && height > 0 && width > 0, where, ": shape [", channels, ", ",
                  height, ", ", width, "] must be positive");
    sum_ = sum_type("dchag::Climatology.sum", channels, height, width);
  }

  int channels() const { return static_cast<int>(sum_.extent(0)); }
  int height() const { return static_cast<int>(sum_.extent(1)); }
  int width() const { return static_cast<int>(sum_.extent(2)); }
  // The number of states added (on every rank, after all_reduce).
  double samples() const { return samples_; }

  // Adds the B states of x [B, C, H, W].
  template <class Batch>
  void add(const ExecSpace& space, const Batch& x) {
    static_assert(Kokkos::is_view<Batch>::value && unsigned(Batch::rank) == 4,
                  "dchag::Climatology::add takes a rank-4 view [B, C, H, W]");
    static_assert(
        Kokkos::SpaceAccessibility<ExecSpace, typename Batch::memory_space>::accessible,
        "dchag::Climatology::add: view not accessible from the execution space");
    const char* where = "dchag::Climatology::add";
    Impl::require(!reduced_, where, ": already summed over the ranks");
    Impl::require(x.extent(1) == sum_.extent(0) && x.extent(2) == sum_.extent(1) &&
                      x.extent(3) == sum_.extent(2),
                  where, ": states ", Impl::shape_of(x), " must be [B, ", channels(), ", ",
                  height(), ", ", width(), "]");
    Impl::add_to_climatology(space, sum_, x);
    samples_ += static_cast<double>(x.extent(0));
  }

  // Collective over `comm`, whose ranks added different states; afterwards every rank holds
  // the totals.
  void all_reduce(const ExecSpace& space, const Communicator& comm) {
    Impl::require(!reduced_, "dchag::Climatology::all_reduce: already summed over the ranks");
    all_reduce_sum(space, comm, sum_);
    samples_ = all_reduce_sum(comm, samples_);
    reduced_ = true;
  }

  // The mean state [C, H, W]: the climatology.
  template <class T>
  View3<T, ExecSpace> mean(const ExecSpace& space) const {
    Impl::require(samples_ > 0,
                  "dchag::Climatology::mean: no states were added (an empty training split?)");
    View3<T, ExecSpace> out(Kokkos::view_alloc("dchag::climatology", Kokkos::WithoutInitializing),
                            channels(), height(), width());
    Impl::climatology_mean(space, out, sum_, samples_);
    return out;
  }

 private:
  sum_type sum_;
  double samples_ = 0;
  bool reduced_ = false;
};

// The climatology forecast: out[b] = clim for every sample b of out [B, C, H, W].
template <class ExecSpace, class Out, class Clim>
void climatology_forecast(const ExecSpace& space, const Out& out, const Clim& clim) {
  static_assert(Kokkos::is_view<Out>::value && unsigned(Out::rank) == 4 &&
                    Kokkos::is_view<Clim>::value && unsigned(Clim::rank) == 3,
                "dchag::climatology_forecast: out [B, C, H, W], clim [C, H, W]");
  Impl::require(out.extent(1) == clim.extent(0) && out.extent(2) == clim.extent(1) &&
                    out.extent(3) == clim.extent(2),
                "dchag::climatology_forecast: out ", Impl::shape_of(out),
                " does not match the climatology ", Impl::shape_of(clim));
  Impl::broadcast_climatology(space, out, clim);
}

}  // namespace dchag

#endif
