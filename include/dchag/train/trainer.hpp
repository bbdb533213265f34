#ifndef DCHAG_TRAIN_TRAINER_HPP
#define DCHAG_TRAIN_TRAINER_HPP

// One optimisation step of a forecasting model, and what it cost:
//   zero grads -> forward -> latitude-weighted MSE -> backward -> average over data-parallel
//   ranks -> clip to the global norm -> AdamW.
// The model is any type with forward(space, x, lead_times, ForwardMode), backward(space, dpred),
// parameters(), grid() and forward_flops(batch) (dchag::ChannelViT). Each rank passes its own
// part of the global batch (its dp share of the samples, its own input channels) and the full
// targets of those samples.

#include <dchag/core/error.hpp>
#include <dchag/core/view.hpp>
#include <dchag/model/dropout_context.hpp>
#include <dchag/train/losses.hpp>
#include <dchag/train/optimizer_loop.hpp>

namespace dchag {

template <class Model>
class ForecastTrainer {
 public:
  using T = typename Model::scalar;
  using ExecSpace = typename Model::execution_space;

  ForecastTrainer(Model& model, const TrainConfig& config)
      : model_(model), loop_(model.parameters(), config) {}

  // x [B, C_local, H, W] (this rank's channels), y [B, C_out, H, W]; lead_times [B];
  // lat_weights [H].
  StepReport step(const ExecSpace& space, const View4<T, ExecSpace>& x,
                  const View4<T, ExecSpace>& y, const View1<T, ExecSpace>& lead_times,
                  const View1<T, ExecSpace>& lat_weights) {
    StepReport r = loop_.begin(space);
    // A training forward (dropout on, if the model has any), its masks keyed by the step.
    auto pred = model_.forward(space, x, lead_times, ForwardMode::train(std::uint64_t(r.step)));
    if (dpred_.extent(0) != pred.extent(0))
      dpred_ = View4<T, ExecSpace>("dprediction", pred.extent(0), pred.extent(1), pred.extent(2),
                                   pred.extent(3));
    r.loss = Impl::lat_weighted_mse_unchecked(space, pred, y, lat_weights, dpred_);
    model_.backward(space, dpred_);
    loop_.finish(space, model_.grid(), x.extent(0), model_.forward_flops(x.extent(0)), r);
    return r;
  }

  std::int64_t step_count() const { return loop_.step_count(); }
  void set_step_count(std::int64_t steps) { loop_.set_step_count(steps); }
  const ParameterList<T, ExecSpace>& parameters() const { return loop_.parameters(); }
  AdamW<T, ExecSpace>& optimizer() { return loop_.optimizer(); }

 private:
  Model& model_;
  Impl::OptimizerLoop<T, ExecSpace> loop_;
  View4<T, ExecSpace> dpred_;
};

}  // namespace dchag

#endif
