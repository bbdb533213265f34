#ifndef DCHAG_TRAIN_TRAINER_HPP
#define DCHAG_TRAIN_TRAINER_HPP

// One optimisation step of a forecasting model, and what it cost:
//   zero grads -> forward -> latitude-weighted MSE -> backward -> average over data-parallel
//   ranks -> clip to the global norm -> AdamW.
// The model is any type with forward(space, x, lead_times), backward(space, dpred),
// parameters(), grid() and forward_flops(batch) (dchag::ChannelViT). Each rank passes its own
// part of the global batch (its dp share of the samples, its own input channels) and the full
// targets of those samples.

#include <chrono>
#include <cstdint>

#include <dchag/core/error.hpp>
#include <dchag/core/memory_tracker.hpp>
#include <dchag/core/view.hpp>
#include <dchag/train/adamw.hpp>
#include <dchag/train/grad_clip.hpp>
#include <dchag/train/gradient_sync.hpp>
#include <dchag/train/losses.hpp>
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
  double seconds = 0, samples_per_second = 0, gflops_per_second = 0;
  std::uint64_t peak_bytes = 0;  // peak bytes live in Kokkos allocations so far
};

template <class Model>
class ForecastTrainer {
 public:
  using T = typename Model::scalar;
  using ExecSpace = typename Model::execution_space;

  ForecastTrainer(Model& model, const TrainConfig& config)
      : model_(model),
        config_(config),
        params_(model.parameters()),
        optimizer_(adamw_config(config)),
        schedule_(config.lr, config.warmup_steps, config.steps, config.warmup_start_lr,
                  config.min_lr) {
    optimizer_.initialize(params_);
  }

  // x, y [B, C, H, W]; lead_times [B]; lat_weights [H].
  StepReport step(const ExecSpace& space, const View4<T, ExecSpace>& x,
                  const View4<T, ExecSpace>& y, const View1<T, ExecSpace>& lead_times,
                  const View1<T, ExecSpace>& lat_weights) {
    const auto t0 = std::chrono::steady_clock::now();
    StepReport r;
    r.step = step_;
    r.lr = schedule_.lr(step_);
    zero_grad(space, params_);
    auto pred = model_.forward(space, x, lead_times);
    if (dpred_.extent(0) != pred.extent(0))
      dpred_ = View4<T, ExecSpace>("dprediction", pred.extent(0), pred.extent(1), pred.extent(2),
                                   pred.extent(3));
    r.loss = lat_weighted_mse(space, pred, y, lat_weights, dpred_);
    model_.backward(space, dpred_);
    const ProcessGrid& grid = model_.grid();
    sync_.average_over_dp(space, grid, params_);
    if (grid.dp() > 1) r.loss = all_reduce_sum(grid.dp_comm(), r.loss) / grid.dp();
    r.grad_norm = global_grad_norm(space, grid, params_);
    apply_grad_clip(space, params_, config_.max_grad_norm, r.grad_norm);
    optimizer_.step(space, params_, r.lr);
    space.fence();
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // Samples of the global batch per second; FLOPs this rank executed (forward + backward ~
    // 3x the forward: two GEMMs per forward GEMM).
    r.samples_per_second = double(x.extent(0)) * grid.dp() / r.seconds;
    r.gflops_per_second = 3.0 * model_.forward_flops(x.extent(0)) / r.seconds * 1e-9;
    r.peak_bytes = MemoryTracker::peak_total_bytes();
    ++step_;
    return r;
  }

  std::int64_t step_count() const { return step_; }
  const ParameterList<T, ExecSpace>& parameters() const { return params_; }
  AdamW<T, ExecSpace>& optimizer() { return optimizer_; }

 private:
  static AdamWConfig adamw_config(const TrainConfig& c) {
    AdamWConfig a;
    a.lr = c.lr;
    a.beta2 = c.beta2;
    a.weight_decay = c.weight_decay;
    return a;
  }

  Model& model_;
  TrainConfig config_;
  ParameterList<T, ExecSpace> params_;
  AdamW<T, ExecSpace> optimizer_;
  WarmupCosine schedule_;
  View4<T, ExecSpace> dpred_;
  GradientSync<T, ExecSpace> sync_;
  std::int64_t step_ = 0;
};

}  // namespace dchag

#endif
