#ifndef DCHAG_TRAIN_TRAINER_HPP
#define DCHAG_TRAIN_TRAINER_HPP

// One optimisation step of a forecasting model, and what it cost:
//   zero grads -> forward -> latitude-weighted MSE -> backward -> average over data-parallel
//   ranks -> clip to the global norm -> AdamW.
// The model is any type with forward(space, x, lead_times, ForwardMode), backward(space, dpred),
// parameters(), grid(), config(), predicted_outputs(), distributes_outputs() and
// forward_flops(batch) (dchag::ChannelViT). Each rank passes its own part of the global batch:
// its dp share of the samples, its own input channels, and the targets of the outputs it
// predicts (model.predicted_outputs(): all of them, or under D-CHAG those of its channels, so
// that the loss and its gradient are split over the TP ranks like the channels).

#include <dchag/core/error.hpp>
#include <dchag/core/view.hpp>
#include <dchag/model/dropout_context.hpp>
#include <dchag/parallel/collectives.hpp>
#include <dchag/train/losses.hpp>
#include <dchag/train/optimizer_loop.hpp>

namespace dchag {
namespace Impl {
template <class ExecSpace, class Model, class Pred, class Target, class Weights, class Grad>
double forecast_loss_unchecked(const ExecSpace& space, const Model& model, const Pred& pred,
                               const Target& y, const Weights& w_lat, const Grad& dpred,
                               double loss_scale = 1) {
  // The mean is over every output of the global prediction; a rank that predicts none of them
  // (fewer outputs than TP ranks) adds nothing but still joins the sum.
  const double count = double(pred.extent(0)) * double(model.config().out_channels()) *
                       double(pred.extent(2)) * double(pred.extent(3));
  double loss = pred.size() == 0
                    ? 0.0
                    : lat_weighted_mse_unchecked(space, pred, y, w_lat, dpred, count,
                                                 loss_scale);
  if (model.distributes_outputs()) loss = all_reduce_sum(model.grid().tp_comm(), loss);
  return loss;
}
}  // namespace Impl

// The latitude-weighted MSE of a forecasting model's prediction (forward()'s result) against
// this rank's targets y (of model.predicted_outputs()), with dpred overwritten by its gradient:
// the loss of the whole prediction, the same on every TP rank. Collective over the TP ranks
// when the model distributes its outputs (each rank then holds its share of the gradient).
template <class ExecSpace, class Model, class Pred, class Target, class Weights, class Grad>
double forecast_loss(const ExecSpace& space, const Model& model, const Pred& pred,
                     const Target& y, const Weights& w_lat, const Grad& dpred) {
  const double loss = Impl::forecast_loss_unchecked(space, model, pred, y, w_lat, dpred);
  Impl::require_finite_loss("dchag::forecast_loss", loss);
  return loss;
}

template <class Model>
class ForecastTrainer {
 public:
  using T = typename Model::scalar;
  using ExecSpace = typename Model::execution_space;

  ForecastTrainer(Model& model, const TrainConfig& config)
      : model_(model), loop_(model.parameters(), config) {}

  // x [B, C_local, H, W] (this rank's channels), y [B, K, H, W] (the K = predicted_outputs()
  // targets, in that order); lead_times [B]; lat_weights [H].
  StepReport step(const ExecSpace& space, const View4<T, ExecSpace>& x,
                  const View4<T, ExecSpace>& y, const View1<T, ExecSpace>& lead_times,
                  const View1<T, ExecSpace>& lat_weights) {
    const auto& config = model_.config();
    const std::size_t K = model_.predicted_outputs().size();
    Impl::require(y.extent(0) == x.extent(0) && y.extent(1) == K &&
                      y.extent(2) == std::size_t(config.height) &&
                      y.extent(3) == std::size_t(config.width),
                  "ForecastTrainer: targets ", Impl::shape_of(y), " must be [", x.extent(0), ", ",
                  K, ", ", config.height, ", ", config.width, "]: the ", K,
                  " output variables this rank predicts (model.predicted_outputs()) of ",
                  config.out_channels());
    StepReport r = loop_.begin(space);
    // A training forward (dropout on, if the model has any), its masks keyed by the step.
    auto pred = model_.forward(space, x, lead_times, ForwardMode::train(std::uint64_t(r.step)));
    if (dpred_.extent(0) != pred.extent(0) || dpred_.extent(1) != pred.extent(1))
      dpred_ = View4<T, ExecSpace>("dprediction", pred.extent(0), pred.extent(1), pred.extent(2),
                                   pred.extent(3));
    // dpred is the gradient of loss_scale() x the loss (1 but for fp16: see LossScaler); the
    // optimizer loop divides the scale out again.
    r.loss = Impl::forecast_loss_unchecked(space, model_, pred, y, lat_weights, dpred_,
                                           loop_.loss_scale());
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
