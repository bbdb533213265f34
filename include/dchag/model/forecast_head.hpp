#ifndef DCHAG_MODEL_FORECAST_HEAD_HPP
#define DCHAG_MODEL_FORECAST_HEAD_HPP

// ClimaX's prediction head: decoder_depth x [Linear(D, D), GELU], Linear(D, C_out*p*p), then
// unpatchify to [B, C_out, H, W]. Named as ClimaX's nn.Sequential: head.0, head.2, ... are the
// Linears (the GELUs at odd indices have no parameters), the last Linear is head.{2*depth}.

#include <string>
#include <vector>

#include <dchag/core/error.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/view.hpp>
#include <dchag/kernels/gelu.hpp>
#include <dchag/kernels/patchify.hpp>
#include <dchag/layers/linear.hpp>

namespace dchag {

template <class T, class ExecSpace>
class ForecastHead {
 public:
  using matrix = View2<T, ExecSpace>;
  using image = View4<T, ExecSpace>;

  ForecastHead() = default;
  ForecastHead(int dim, int out_channels, int patch, int decoder_depth)
      : out_channels_(out_channels), patch_(patch) {
    Impl::require(out_channels > 0 && patch > 0 && decoder_depth >= 0,
                  "ForecastHead: out_channels (", out_channels, ") and patch (", patch,
                  ") must be positive and decoder_depth (", decoder_depth, ") non-negative");
    for (int i = 0; i < decoder_depth; ++i)
      hidden_.emplace_back("head." + std::to_string(2 * i), dim, dim);
    acts_.resize(decoder_depth);
    out_ = Linear<T, ExecSpace>("head." + std::to_string(2 * decoder_depth), dim,
                                out_channels * patch * patch);
  }

  void init(std::uint64_t seed) {
    for (auto& l : hidden_) l.init(seed);
    out_.init(seed);
  }

  // tokens [B*L, D] -> prediction [B, C_out, H, W]
  image forward(const ExecSpace& space, const ConstMatrix<T, ExecSpace>& tokens, int batch,
                int height, int width) {
    ConstMatrix<T, ExecSpace> x = tokens;
    for (std::size_t i = 0; i < hidden_.size(); ++i) {
      auto pre = hidden_[i].forward(space, x);
      if (acts_[i].extent(0) != pre.extent(0))
        acts_[i] = matrix("head.gelu", pre.extent(0), pre.extent(1));
      gelu(space, pre, acts_[i]);
      x = acts_[i];
    }
    auto y = out_.forward(space, x);
    if (pred_.extent(0) != std::size_t(batch) || pred_.extent(2) != std::size_t(height) ||
        pred_.extent(3) != std::size_t(width))
      pred_ = image("prediction", batch, out_channels_, height, width);
    unpatchify(space, y, patch_, pred_);
    return pred_;
  }

  // dL/dprediction -> dL/dtokens
  matrix backward(const ExecSpace& space, const image& dpred) {
    Impl::require(dpred.extent(0) == pred_.extent(0) && dpred.extent(1) == pred_.extent(1) &&
                      dpred.extent(2) == pred_.extent(2) && dpred.extent(3) == pred_.extent(3),
                  "ForecastHead: gradient ", Impl::shape_of(dpred),
                  " does not match the prediction ", Impl::shape_of(pred_));
    const std::size_t rows = pred_.extent(0) * (pred_.extent(2) / patch_) *
                             (pred_.extent(3) / patch_);
    if (dy_.extent(0) != rows) dy_ = matrix("head.dy", rows, out_.out_features());
    patchify(space, dpred, patch_, dy_);
    matrix d = out_.backward(space, dy_);
    for (std::size_t i = hidden_.size(); i-- > 0;) {
      // gelu_backward reads the pre-activation the Linear returned in forward.
      gelu_backward(space, hidden_pre(i), d, d);
      d = hidden_[i].backward(space, d);
    }
    return d;
  }

  // Every view of parameter storage with its gradient, in a fixed order (model sharding,
  // parallel/sharded_unit.hpp re-points them).
  template <class F>
  void visit_storage(F&& f) {
    for (auto& l : hidden_) l.visit_storage(f);
    out_.visit_storage(f);
  }

  void parameters(ParameterList<T, ExecSpace>& list) const {
    for (auto& l : hidden_) l.parameters(list);
    out_.parameters(list);
  }

  double flops(std::size_t rows) const {
    double f = out_.flops(rows);
    for (auto& l : hidden_) f += l.flops(rows);
    return f;
  }

 private:
  // The Linear keeps its output buffer until its next forward: that is the GELU's input.
  matrix hidden_pre(std::size_t i) const { return hidden_[i].output(); }

  int out_channels_ = 0, patch_ = 0;
  std::vector<Linear<T, ExecSpace>> hidden_;
  std::vector<matrix> acts_;
  Linear<T, ExecSpace> out_;
  image pred_;
  matrix dy_;
};

}  // namespace dchag

#endif
