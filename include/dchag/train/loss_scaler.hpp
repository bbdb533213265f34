#ifndef DCHAG_TRAIN_LOSS_SCALER_HPP
#define DCHAG_TRAIN_LOSS_SCALER_HPP

// Dynamic loss scaling for IEEE half gradients, as PyTorch's GradScaler does it: the loss
// gradient is multiplied by scale() before the backward pass, so that small gradients, which
// fp16 (smallest normal 2^-14) would flush to zero, stay representable; the optimizer divides
// the scale out again in float when it reads them (AdamW::step's grad_scale = inverse_scale()),
// never in fp16, where the division would underflow the very values the scale protected. A step
// whose gradients hold Inf or NaN (the scale was too large) is skipped and the scale halved;
// after growth_interval finite steps in a row it doubles.
//
// The check is global: every rank must skip the same steps, or the replicas' weights part. It
// is one reduction over the rank's gradients and one all-reduce of the verdict over the
// communicator given (the model's world: every rank of every group).
//
// For bf16 (float's range), float and double (ScalarTraits<T>::needs_loss_scaling false) the
// scaler is the identity: scale 1, every step finite, nothing reduced or communicated.

#include <cmath>
#include <cstdint>

#include <dchag/core/error.hpp>
#include <dchag/core/scalar_traits.hpp>
#include <dchag/parallel/collectives.hpp>
#include <dchag/parallel/communicator.hpp>
#include <dchag/train/parameter_table.hpp>

namespace dchag {

// PyTorch's defaults (torch.amp.GradScaler).
struct LossScalerConfig {
  double init_scale = 65536.0;  // 2^16
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  std::int64_t growth_interval = 2000;
};

template <class T>
class LossScaler {
 public:
  static constexpr bool enabled = ScalarTraits<T>::needs_loss_scaling;

  explicit LossScaler(const LossScalerConfig& config = LossScalerConfig()) : config_(config) {
    Impl::require(std::isfinite(config.init_scale) && config.init_scale > 0,
                  "dchag::LossScaler: init_scale is ", config.init_scale,
                  ", expected a finite value > 0");
    Impl::require(std::isfinite(config.growth_factor) && config.growth_factor > 1,
                  "dchag::LossScaler: growth_factor is ", config.growth_factor,
                  ", expected a finite value > 1");
    Impl::require(config.backoff_factor > 0 && config.backoff_factor < 1,
                  "dchag::LossScaler: backoff_factor is ", config.backoff_factor,
                  ", expected a value in (0, 1)");
    Impl::require(config.growth_interval > 0, "dchag::LossScaler: growth_interval is ",
                  config.growth_interval, ", expected a value > 0");
    scale_ = enabled ? config.init_scale : 1.0;
  }

  // What the loss gradient is multiplied by, and what the optimizer multiplies the gradients by.
  double scale() const { return scale_; }
  double inverse_scale() const { return 1.0 / scale_; }

  // Whether every gradient of every rank of `comm` is finite (collective over comm when
  // enabled; the same answer on every rank). The gradients are left as they are (scaled).
  template <class ExecSpace>
  bool check_finite(const ExecSpace& space, const ParameterTable<T, ExecSpace>& table,
                    const Communicator& comm) const {
    if constexpr (!enabled) {
      (void)space;
      (void)table;
      (void)comm;
      return true;
    } else {
      // Squares of finite fp16 values (at most 65504^2) cannot overflow a double sum: only an
      // Inf or NaN gradient makes it non-finite.
      const double local = std::isfinite(grad_sum_squares(space, table)) ? 0.0 : 1.0;
      return all_reduce_max(comm, local) == 0.0;
    }
  }
  template <class ExecSpace>
  bool check_finite(const ExecSpace& space, const ParameterList<T, ExecSpace>& params,
                    const Communicator& comm) const {
    if constexpr (!enabled) return true;
    return check_finite(space, ParameterTable<T, ExecSpace>(params), comm);
  }

  // After a step: halve on overflow (the step was skipped), grow after growth_interval finite
  // steps in a row. Every rank calls it with the same verdict (check_finite's).
  void update(bool finite) {
    if (!enabled) return;
    if (!finite) {
      scale_ *= config_.backoff_factor;
      growth_tracker_ = 0;
      ++skipped_;
      return;
    }
    if (++growth_tracker_ == config_.growth_interval) {
      const double grown = scale_ * config_.growth_factor;
      if (std::isfinite(grown)) scale_ = grown;
      growth_tracker_ = 0;
    }
  }

  // Finite steps since the scale last changed (or overflowed): the state a checkpoint saves
  // with scale(), and restores with set_state().
  std::int64_t growth_tracker() const { return growth_tracker_; }
  std::int64_t skipped_steps() const { return skipped_; }
  void set_state(double scale, std::int64_t growth_tracker) {
    Impl::require(std::isfinite(scale) && scale > 0, "dchag::LossScaler: scale ", scale,
                  " is not a finite value > 0");
    Impl::require(enabled || scale == 1.0, "dchag::LossScaler: scale ", scale, " for ",
                  ScalarTraits<T>::name, ", which is not scaled (scale 1)");
    Impl::require(growth_tracker >= 0 && growth_tracker < config_.growth_interval,
                  "dchag::LossScaler: growth tracker ", growth_tracker, " is not in [0, ",
                  config_.growth_interval, ")");
    scale_ = scale;
    growth_tracker_ = growth_tracker;
  }
  const LossScalerConfig& config() const { return config_; }

 private:
  LossScalerConfig config_;
  double scale_ = 1.0;
  std::int64_t growth_tracker_ = 0;
  std::int64_t skipped_ = 0;
};

}  // namespace dchag

#endif
