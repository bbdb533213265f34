#ifndef DCHAG_TRAIN_SCHEDULE_HPP
#define DCHAG_TRAIN_SCHEDULE_HPP

// Learning-rate schedule of ClimaX (LinearWarmupCosineAnnealingLR, stepped once per optimiser
// step): a linear warm-up from warmup_start_lr to base_lr, then a half cosine from base_lr down
// to min_lr at total_steps. lr(step) is the rate of the optimiser step that follows `step`
// completed steps (0 for the first), which is what the PyTorch scheduler's closed form gives
// at last_epoch = step.

#include <cmath>
#include <cstdint>

#include <dchag/core/error.hpp>

namespace dchag {

class WarmupCosine {
 public:
  WarmupCosine(double base_lr, std::int64_t warmup_steps, std::int64_t total_steps,
               double warmup_start_lr = 0.0, double min_lr = 0.0)
      : base_(base_lr),
        start_(warmup_start_lr),
        min_(min_lr),
        warmup_(warmup_steps),
        total_(total_steps) {
    const char* where = "dchag::WarmupCosine";
    Impl::require(std::isfinite(base_lr) && base_lr > 0, where, ": base_lr is ", base_lr,
                  ", expected a finite value > 0");
    Impl::require(std::isfinite(warmup_start_lr) && warmup_start_lr >= 0 &&
                      warmup_start_lr <= base_lr,
                  where, ": warmup_start_lr is ", warmup_start_lr, ", expected a value in [0, ",
                  "base_lr = ", base_lr, "]");
    Impl::require(std::isfinite(min_lr) && min_lr >= 0 && min_lr <= base_lr, where,
                  ": min_lr is ", min_lr, ", expected a value in [0, base_lr = ", base_lr, "]");
    Impl::require(warmup_steps >= 0, where, ": warmup_steps is ", warmup_steps,
                  ", expected a value >= 0");
    Impl::require(total_steps > warmup_steps, where, ": total_steps is ", total_steps,
                  ", expected more than warmup_steps = ", warmup_steps,
                  " (the cosine phase needs at least one step)");
  }

  double lr(std::int64_t step) const {
    Impl::require(step >= 0, "dchag::WarmupCosine::lr: step is ", step, ", expected >= 0");
    if (step < warmup_) {
      // ClimaX divides by warmup - 1, so base_lr is reached at the last warm-up step and held
      // for one more step when the cosine starts.
      const double span = warmup_ > 1 ? static_cast<double>(warmup_ - 1) : 1.0;
      return start_ + static_cast<double>(step) * (base_ - start_) / span;
    }
    // ClimaX's chainable form climbs back up the cosine past max_epochs; a run that trains past
    // its planned length is better served by holding the floor.
    if (step >= total_) return min_;
    const double pi = 3.14159265358979323846;
    const double progress =
        static_cast<double>(step - warmup_) / static_cast<double>(total_ - warmup_);
    return min_ + 0.5 * (base_ - min_) * (1.0 + std::cos(pi * progress));
  }

  double base_lr() const { return base_; }
  double warmup_start_lr() const { return start_; }
  double min_lr() const { return min_; }
  std::int64_t warmup_steps() const { return warmup_; }
  std::int64_t total_steps() const { return total_; }

 private:
  double base_, start_, min_;
  std::int64_t warmup_, total_;
};

}  // namespace dchag

#endif
