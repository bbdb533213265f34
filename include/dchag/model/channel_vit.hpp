#ifndef DCHAG_MODEL_CHANNEL_VIT_HPP
#define DCHAG_MODEL_CHANNEL_VIT_HPP

// The channel vision transformer for forecasting (ClimaX), with the channel aggregation chosen
// by a template parameter:
//   tokenize (one patch embedding per channel) + channel embedding -> aggregate channels ->
//   + position (+ lead-time) embedding -> encoder -> forecast head -> [B, C_out, H, W].
// `Partial` is the partial aggregator used on the non-final levels of config.levels
// (LinearAggregator: D-CHAG-L, CrossAttentionAggregator: D-CHAG-C); levels {1} is the ClimaX
// baseline whatever `Partial` is.

#include <cstdint>
#include <string>

#include <dchag/aggregation/hierarchy.hpp>
#include <dchag/aggregation/linear_aggregator.hpp>
#include <dchag/core/error.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/view.hpp>
#include <dchag/layers/embeddings.hpp>
#include <dchag/layers/patch_embed.hpp>
#include <dchag/model/config.hpp>
#include <dchag/model/encoder.hpp>
#include <dchag/model/forecast_head.hpp>

namespace dchag {

template <class T, class ExecSpace, template <class, class> class Partial = LinearAggregator>
class ChannelViT {
 public:
  using scalar = T;
  using execution_space = ExecSpace;
  using image = View4<T, ExecSpace>;
  using matrix = View2<T, ExecSpace>;

  explicit ChannelViT(const ModelConfig& config)
      : config_(validated(config)),
        embed_("token_embeds", config.channels, config.patch, config.dim),
        var_embed_(config.channels, config.dim),
        aggregation_(config.channels, config.dim, config.heads, config.levels),
        pos_embed_(config.patches(), config.dim, config.grid_h(), config.grid_w()),
        encoder_(config.dim, config.depth, config.heads, double(config.mlp_ratio)),
        head_(config.dim, config.out_channels, config.patch, config.decoder_depth) {
    if (config_.lead_time) lead_embed_ = LeadTimeEmbedding<T, ExecSpace>(config.dim);
    init();
  }

  // Every parameter's initial value depends only on (seed, its name): see core/parameter.hpp.
  void init() {
    const std::uint64_t s = config_.seed;
    embed_.init(s);
    var_embed_.init(s);
    aggregation_.init(s);
    pos_embed_.init(s);
    if (config_.lead_time) lead_embed_.init(s);
    encoder_.init(s);
    head_.init(s);
  }

  // x [B, C, H, W] at time t, lead_times [B] -> prediction [B, C_out, H, W]
  image forward(const ExecSpace& space, const image& x, const View1<T, ExecSpace>& lead_times) {
    check_input(x, lead_times);
    batch_ = static_cast<int>(x.extent(0));
    const int L = config_.patches();
    auto tokens = embed_.forward(space, x);  // [C, B*L, D]
    var_embed_.forward(space, tokens);
    auto agg = aggregation_.forward(space, tokens);  // [B*L, D]
    if (x_.extent(0) != agg.extent(0)) x_ = matrix("encoder_input", agg.extent(0), agg.extent(1));
    Kokkos::deep_copy(space, x_, agg);
    pos_embed_.forward(space, x_);
    if (config_.lead_time) lead_embed_.forward(space, x_, lead_times);
    auto encoded = encoder_.forward(space, x_, batch_, L);
    return head_.forward(space, encoded, batch_, config_.height, config_.width);
  }

  // Accumulates every parameter's gradient from dL/dprediction.
  void backward(const ExecSpace& space, const image& dpred) {
    Impl::require(batch_ > 0, "ChannelViT: backward() called before forward()");
    auto d = head_.backward(space, dpred);
    d = encoder_.backward(space, d);
    if (config_.lead_time) lead_embed_.backward(space, d);
    pos_embed_.backward(space, d);
    auto dtokens = aggregation_.backward(space, d);
    var_embed_.backward(space, dtokens);
    embed_.backward(space, dtokens);
  }

  ParameterList<T, ExecSpace> parameters() const {
    ParameterList<T, ExecSpace> list;
    embed_.parameters(list);
    var_embed_.parameters(list);
    aggregation_.parameters(list);
    pos_embed_.parameters(list);
    if (config_.lead_time) lead_embed_.parameters(list);
    encoder_.parameters(list);
    head_.parameters(list);
    return list;
  }

  // Multiply-add FLOPs x2 of one forward pass on `batch` samples (backward is about twice this).
  double forward_flops(std::size_t batch) const {
    const std::size_t L = config_.patches(), rows = batch * L;
    return embed_.flops(rows) + aggregation_.flops(rows) +
           (config_.lead_time ? lead_embed_.flops(batch) : 0.0) + encoder_.flops(batch, L) +
           head_.flops(rows);
  }

  const ModelConfig& config() const { return config_; }

 private:
  static const ModelConfig& validated(const ModelConfig& c) {
    c.validate();
    return c;
  }

  void check_input(const image& x, const View1<T, ExecSpace>& lead) const {
    const ModelConfig& c = config_;
    Impl::require(x.extent(0) > 0 && x.extent(1) == std::size_t(c.channels) &&
                      x.extent(2) == std::size_t(c.height) && x.extent(3) == std::size_t(c.width),
                  "ChannelViT: input ", Impl::shape_of(x), " must be [B, ", c.channels, ", ",
                  c.height, ", ", c.width, "]");
    Impl::require(!c.lead_time || lead.extent(0) == x.extent(0), "ChannelViT: lead times ",
                  Impl::shape_of(lead), " must have one entry per sample (", x.extent(0), ")");
  }

  ModelConfig config_;
  ChannelPatchEmbed<T, ExecSpace> embed_;
  ChannelEmbedding<T, ExecSpace> var_embed_;
  ChannelAggregation<T, ExecSpace, Partial> aggregation_;
  PositionEmbedding<T, ExecSpace> pos_embed_;
  LeadTimeEmbedding<T, ExecSpace> lead_embed_;
  Encoder<T, ExecSpace> encoder_;
  ForecastHead<T, ExecSpace> head_;
  matrix x_;
  int batch_ = 0;
};

}  // namespace dchag

#endif
