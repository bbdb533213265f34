#ifndef DCHAG_TRAIN_OPTIMIZER_LOOP_HPP
#define DCHAG_TRAIN_OPTIMIZER_LOOP_HPP

// The model-independent frame of a training step, shared by the forecasting and the masked
// autoencoder trainers: zero grads, [model forward, loss, model backward], average over
// data-parallel ranks, clip to the global norm, AdamW at the scheduled rate, and the report.

#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>

#include <dchag/core/memory_tracker.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/parallel/collectives.hpp>
#include <dchag/parallel/process_grid.hpp>
#include <dchag/train/adamw.hpp>
#include <dchag/train/grad_clip.hpp>
#include <dchag/train/loss_scaler.hpp>
#include <dchag/train/losses.hpp>
#include <dchag/train/parameter_table.hpp>
#include <dchag/train/gradient_sync.hpp>
#include <dchag/train/schedule.hpp>

namespace dchag {

struct TrainConfig {
  std::int64_t steps = 100;
  double lr = 2e-3;
  double min_lr = 1e-5;
  double warmup_start_lr = 1e-5;
  std::int64_t warmup_steps = 10;
  double weight_decay = 1e-5;  // ClimaX
  double beta2 = 0.95;         // ClimaX
  double max_grad_norm = 1.0;
};

struct StepReport {
  std::int64_t step = 0;
  double loss = 0, lr = 0, grad_norm = 0;
  // fp16 only (train/loss_scaler.hpp): the gradients overflowed, the update was skipped.
  bool skipped = false;
  double seconds = 0, samples_per_second = 0, gflops_per_second = 0;
  std::uint64_t peak_bytes = 0;  // peak bytes live in Kokkos allocations so far
};

namespace Impl {

inline AdamWConfig adamw_from_train_config(const TrainConfig& c) {
  AdamWConfig a;
  a.lr = c.lr;
  a.beta2 = c.beta2;
  a.weight_decay = c.weight_decay;
  return a;
}

// The model-independent frame of a training step over a fixed parameter list: begin() zeroes
// the gradients and starts the clock; finish(), after the model's backward, averages the
// gradients (and the loss) over the data-parallel ranks (dp x fsdp), clips to the global norm, takes the AdamW step at the
// scheduled rate and fills in the report.
template <class T, class ExecSpace>
class OptimizerLoop {
 public:
  OptimizerLoop(ParameterList<T, ExecSpace> params, const TrainConfig& config)
      : config_(config),
        params_(std::move(params)),
        table_(params_),
        optimizer_(adamw_from_train_config(config)),
        schedule_(config.lr, config.warmup_steps, config.steps, config.warmup_start_lr,
                  config.min_lr) {
    // The schedule checks the rates as doubles; the update applies them in T.
    // (Compared in double: converting an out-of-range double to float is undefined.)
    const double largest = static_cast<double>(std::numeric_limits<master_t<T>>::max());
    Impl::require(std::isfinite(config.lr) && std::fabs(config.lr) <= largest &&
                      std::fabs(config.lr * config.weight_decay) <= largest,
                  "TrainConfig: lr ", config.lr, " is out of the range of the model's ",
                  sizeof(master_t<T>) == 4 ? "float" : "double",
                  is_low_precision_v<T> ? " master weights" : " parameters");
    optimizer_.initialize(params_);
  }

  StepReport begin(const ExecSpace& space) {
    t0_ = std::chrono::steady_clock::now();
    StepReport r;
    r.step = step_;
    r.lr = schedule_.lr(step_);
    zero_grad(space, table_);
    return r;
  }

  // r.loss is this rank's loss on its `local_batch` samples; forward_flops the model's count
  // for them.
  void finish(const ExecSpace& space, const ProcessGrid& grid, std::size_t local_batch,
              double forward_flops, StepReport& r) {
    sync_.average(space, grid, params_);
    if (grid.data_size() > 1) r.loss = all_reduce_sum(grid.data_comm(), r.loss) / grid.data_size();
    // The same value on every rank now (the loss is replicated over tp), so a NaN on one rank
    // stops them all here; the trainers do not check their ranks' losses alone.
    require_finite_loss("dchag training step", r.loss);
    if constexpr (LossScaler<T>::enabled) {
      // The gradients are scale() times the true ones: an overflow skips the step on every
      // rank; otherwise the scale (and the clipping factor) is divided out in AdamW, in float.
      LossScaler<T>& scaler = optimizer_.loss_scaler();
      const bool finite = scaler.check_finite(space, table_, grid.world());
      const double inverse = scaler.inverse_scale();
      scaler.update(finite);
      if (!finite) {
        r.skipped = true;
        r.grad_norm = std::numeric_limits<double>::infinity();
      } else {
        r.grad_norm = global_grad_norm(space, grid, table_) * inverse;
        const double coef =
            Impl::grad_clip_factor("dchag training step", config_.max_grad_norm, r.grad_norm);
        optimizer_.step(space, params_, r.lr, coef * inverse);
      }
    } else {
      r.grad_norm = global_grad_norm(space, grid, table_);
      apply_grad_clip(space, table_, config_.max_grad_norm, r.grad_norm);
      optimizer_.step(space, params_, r.lr);
    }
    space.fence();
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    // Samples of the global batch per second; FLOPs this rank executed (forward + backward ~
    // 3x the forward: two GEMMs per forward GEMM).
    r.samples_per_second = double(local_batch) * grid.data_size() / r.seconds;
    r.gflops_per_second = 3.0 * forward_flops / r.seconds * 1e-9;
    r.peak_bytes = MemoryTracker::peak_total_bytes();
    ++step_;
  }

  std::int64_t step_count() const { return step_; }
  // Resuming from a checkpoint: the schedule continues from `steps`.
  void set_step_count(std::int64_t steps) {
    Impl::require(steps >= 0, "training step count must not be negative, got ", steps);
    step_ = steps;
  }
  const ParameterList<T, ExecSpace>& parameters() const { return params_; }
  AdamW<T, ExecSpace>& optimizer() { return optimizer_; }
  // What the loss gradient must be multiplied by before the backward pass (1 but for fp16).
  double loss_scale() const { return optimizer_.loss_scaler().scale(); }
  LossScaler<T>& loss_scaler() { return optimizer_.loss_scaler(); }

 private:
  TrainConfig config_;
  ParameterList<T, ExecSpace> params_;
  // params_ as one table (its pointers are fixed with the list), for the one-launch zeroing,
  // norm and clipping.
  ParameterTable<T, ExecSpace> table_;
  AdamW<T, ExecSpace> optimizer_;
  WarmupCosine schedule_;
  GradientSync<T, ExecSpace> sync_;
  std::chrono::steady_clock::time_point t0_;
  std::int64_t step_ = 0;
};

}  // namespace Impl
}  // namespace dchag

#endif
