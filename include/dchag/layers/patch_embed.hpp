#ifndef DCHAG_LAYERS_PATCH_EMBED_HPP
#define DCHAG_LAYERS_PATCH_EMBED_HPP

// ClimaX's token_embeds: one Conv2d(1 -> D, kernel = stride = p) per channel, turning image
// x[B, C, H, W] into channel-major tokens T[C, B*L, D] (row n = b*L + l, patch l row-major over
// the (H/p) x (W/p) grid).
//
// Each conv is a [N, p*p] x [p*p, D] product on the channel's patches (im2col, feature
// k = i*p + j for pixel (i, j) of the patch, the order of the flattened kernel [D, 1, p, p]), so
// all channels run as one batched GEMM over the channel index.
//
// A rank that owns channels [channel_begin, channel_begin + channels) holds only their weights,
// under their global names and with their global initial values: "token_embeds.{c}.proj.*".

#include <cstdint>
#include <string>

#include <dchag/core/error.hpp>
#include <dchag/core/init.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/view.hpp>
#include <dchag/kernels/batched_gemm.hpp>
#include <dchag/kernels/channel_rows.hpp>
#include <dchag/kernels/reductions.hpp>
#include <dchag/layers/embeddings.hpp>

namespace dchag {

template <class T, class ExecSpace>
using ConstImage = Unmanaged<const T****, ExecSpace>;

namespace Impl {

// patches(c, n, i*p + j) = x(b, c, py*p + i, px*p + j) for token n = b*L + py*wp + px: a row
// per (channel, token), copied one patch row of p contiguous pixels at a time.
template <class ExecSpace, class XV, class PV>
void im2col_channels(const ExecSpace& space, const XV& x, int patch, std::size_t L,
                     std::size_t wp, const PV& P) {
  const std::int64_t p = patch, N = static_cast<std::int64_t>(P.extent(1));
  const std::int64_t Ls = static_cast<std::int64_t>(L), wps = static_cast<std::int64_t>(wp);
  for_each_row_segment(
      "dchag::ChannelPatchEmbed::im2col", space, P.extent(0) * P.extent(1), P.extent(2),
      KOKKOS_LAMBDA(std::int64_t r, std::int64_t k0, std::int64_t k1) {
        const std::int64_t c = r / N, n = r % N, b = n / Ls, l = n % Ls;
        const std::int64_t h0 = (l / wps) * p, w0 = (l % wps) * p;
        for (std::int64_t k = k0; k < k1;) {
          const std::int64_t i = k / p;
          for (std::int64_t j = k - i * p; j < p && k < k1; ++j, ++k)
            P(c, n, k) = x(b, c, h0 + i, w0 + j);
        }
      });
}

}  // namespace Impl

template <class T, class ExecSpace>
class ChannelPatchEmbed {
 public:
  using tensor = View3<T, ExecSpace>;
  using matrix = View2<T, ExecSpace>;

  ChannelPatchEmbed() = default;
  ChannelPatchEmbed(int channels, int patch, int dim, int channel_begin = 0)
      : ChannelPatchEmbed("token_embeds", channels, patch, dim, channel_begin) {}
  ChannelPatchEmbed(std::string name, int channels, int patch, int dim, int channel_begin = 0)
      : name_(std::move(name)), channels_(channels), patch_(patch), dim_(dim),
        begin_(channel_begin) {
    Impl::require(channels > 0 && patch > 0 && dim > 0 && channel_begin >= 0,
                  "ChannelPatchEmbed '", name_,
                  "': need channels, patch and dim > 0 and channel_begin >= 0, got channels = ",
                  channels, ", patch = ", patch, ", dim = ", dim,
                  ", channel_begin = ", channel_begin);
    const int pp = patch_ * patch_;
    weight_ = tensor(name_ + ".weight", channels_, dim_, pp);
    grad_weight_ = tensor(name_ + ".weight.grad", channels_, dim_, pp);
    bias_ = matrix(name_ + ".bias", channels_, dim_);
    grad_bias_ = matrix(name_ + ".bias.grad", channels_, dim_);
  }

  // ClimaX: the conv weights ~ trunc_normal(std 0.02) (its initialize_weights treats them as
  // the Linear they are); the biases keep PyTorch's Conv2d default, since ClimaX never resets
  // them: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = in_chans * p * p = p * p.
  // Channel c's values come from the streams of its global names only.
  void init(std::uint64_t seed, double std = 0.02) {
    const double bound = 1.0 / patch_;  // 1 / sqrt(p * p)
    for (int c = 0; c < channels_; ++c) {
      truncated_normal(weight_slice(weight_, c), seed,
                       stream_id(param_name(c, "weight")), std);
      uniform(bias_slice(bias_, c), seed, stream_id(param_name(c, "bias")), -bound, bound);
    }
  }

  // x[B, channels, H, W] -> T[channels, B*L, D]. The patches are copied, so x may be freed.
  tensor forward(const ExecSpace& space, const ConstImage<T, ExecSpace>& x) {
    Impl::require(x.extent(1) == std::size_t(channels_), "ChannelPatchEmbed '", name_,
                  "': input ", Impl::shape_of(x), " has ", x.extent(1),
                  " channels, but this embedding holds ", channels_, " (channels [", begin_,
                  ", ", begin_ + channels_, "))");
    Impl::require(x.extent(2) % patch_ == 0 && x.extent(3) % patch_ == 0 && x.extent(2) > 0 &&
                      x.extent(3) > 0 && x.extent(0) > 0,
                  "ChannelPatchEmbed '", name_, "': input ", Impl::shape_of(x), " has H = ",
                  x.extent(2), ", W = ", x.extent(3), ", not both divisible by the patch size ",
                  patch_);
    const std::size_t B = x.extent(0), H = x.extent(2), W = x.extent(3);
    const std::size_t L = (H / patch_) * (W / patch_), N = B * L;
    const std::size_t pp = std::size_t(patch_) * patch_;
    if (patches_.extent(1) != N) {
      patches_ = tensor(name_ + ".patches", channels_, N, pp);
      out_ = tensor(name_ + ".out", channels_, N, dim_);
    }
    Impl::im2col_channels(space, x, patch_, L, W / patch_, patches_);
    batched_gemm(space, Op::N, Op::T, T(1), patches_, weight_, T(0), out_);
    add_channel_rows(space, out_, bias_);
    return out_;
  }

  // The last forward's tokens [channels, B*L, D] (this layer's buffer, rewritten by the next
  // forward).
  const tensor& output() const { return out_; }

  // Accumulates the weight and bias gradients. The input is data: no input gradient.
  void backward(const ExecSpace& space, const ConstTensor3<T, ExecSpace>& dtokens) {
    Impl::require(patches_.extent(1) > 0, "ChannelPatchEmbed '", name_,
                  "': backward() before forward()");
    Impl::require(dtokens.extent(0) == out_.extent(0) && dtokens.extent(1) == out_.extent(1) &&
                      dtokens.extent(2) == out_.extent(2),
                  "ChannelPatchEmbed '", name_, "': token gradient ", Impl::shape_of(dtokens),
                  " does not match the forward output ", Impl::shape_of(out_));
    batched_gemm(space, Op::T, Op::N, T(1), dtokens, patches_, T(1), grad_weight_);
    sum_channel_rows(space, dtokens, grad_bias_);
  }

  // Every view of parameter storage with its gradient, in a fixed order (model sharding,
  // parallel/sharded_unit.hpp re-points them).
  template <class F>
  void visit_storage(F&& f) {
    f(weight_, grad_weight_);
    f(bias_, grad_bias_);
  }

  // Per channel, as PyTorch names them: weight [D, 1, p, p] (decayed), bias [D].
  void parameters(ParameterList<T, ExecSpace>& list) const {
    for (int c = 0; c < channels_; ++c) {
      Impl::add_parameter<T, ExecSpace>(list, param_name(c, "weight"), weight_slice(weight_, c),
                                        weight_slice(grad_weight_, c), true);
      Impl::add_parameter<T, ExecSpace>(list, param_name(c, "bias"), bias_slice(bias_, c),
                                        bias_slice(grad_bias_, c), false);
    }
  }

  // The batched product for B*L tokens (the bias is O(C*N*D) and not counted).
  double flops(std::size_t tokens) const {
    return 2.0 * channels_ * double(tokens) * dim_ * patch_ * patch_;
  }

  // [channels, D, p*p]; channel c's slice is its Conv2d weight [D, 1, p, p] flattened.
  const tensor& weight() const { return weight_; }
  const matrix& bias() const { return bias_; }
  const tensor& grad_weight() const { return grad_weight_; }
  const matrix& grad_bias() const { return grad_bias_; }
  int channels() const { return channels_; }
  int channel_begin() const { return begin_; }
  int patch() const { return patch_; }
  int dim() const { return dim_; }
  const std::string& name() const { return name_; }

 private:
  std::string param_name(int c, const char* what) const {
    return Impl::concat(name_, '.', begin_ + c, ".proj.", what);
  }

  Unmanaged<T****, ExecSpace> weight_slice(const tensor& w, int c) const {
    const std::size_t per = std::size_t(dim_) * patch_ * patch_;
    return Unmanaged<T****, ExecSpace>(w.data() + c * per, dim_, 1, patch_, patch_);
  }
  Unmanaged<T*, ExecSpace> bias_slice(const matrix& b, int c) const {
    return Unmanaged<T*, ExecSpace>(b.data() + std::size_t(c) * dim_, dim_);
  }

  std::string name_;
  int channels_ = 0, patch_ = 0, dim_ = 0, begin_ = 0;
  tensor weight_, grad_weight_;
  matrix bias_, grad_bias_;
  tensor patches_, out_;
};

}  // namespace dchag

#endif
