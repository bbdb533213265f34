#ifndef DCHAG_LAYERS_EMBEDDINGS_HPP
#define DCHAG_LAYERS_EMBEDDINGS_HPP

// The additive embeddings of ClimaX: var_embed (one learnable vector per channel, added to every
// token of that channel), pos_embed (one per patch position, added after the channel
// aggregation) and lead_time_embed (Linear(1 -> D) of the forecast lead time, added to every
// token of its sample). All add in place; their backward passes only accumulate parameter
// gradients, since the gradient with respect to the tokens passes through unchanged.
//
// Token layouts (see DESIGN.md): channel tokens are channel-major T[C, N, D] with N = B*L and
// row n = b*L + l; aggregated tokens are x[B*L, D].

#include <cstdint>
#include <string>

#include <dchag/core/error.hpp>
#include <dchag/core/init.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/view.hpp>
#include <dchag/kernels/bias.hpp>
#include <dchag/kernels/channel_rows.hpp>
#include <dchag/layers/linear.hpp>

namespace dchag {

template <class T, class ExecSpace>
using ConstTensor3 = Unmanaged<const T***, ExecSpace>;
template <class T, class ExecSpace>
using Tensor3 = Unmanaged<T***, ExecSpace>;

namespace Impl {

// A contiguous view registered under a shape with leading 1s, e.g. var_embed [1, C, D].
template <class T, class ExecSpace>
Unmanaged<T***, ExecSpace> with_leading_one(T* data, std::size_t n0, std::size_t n1) {
  return Unmanaged<T***, ExecSpace>(data, 1, n0, n1);
}

}  // namespace Impl

// ClimaX's var_embed [1, C, D]: a learnable vector per channel, initialised to the 1-D sin-cos
// embedding of the global channel index. A rank owning channels [channel_begin,
// channel_begin + channels) stores exactly those rows of the logical table; its parameter is
// registered as [1, channels, D] under the logical name.
template <class T, class ExecSpace>
class ChannelEmbedding {
 public:
  using matrix = View2<T, ExecSpace>;

  ChannelEmbedding() = default;
  ChannelEmbedding(int channels, int dim, int channel_begin = 0, std::string name = "var_embed")
      : name_(std::move(name)), channels_(channels), dim_(dim), begin_(channel_begin) {
    Impl::require(channels > 0 && dim > 0 && channel_begin >= 0, "ChannelEmbedding '", name_,
                  "': need channels > 0, dim > 0 and channel_begin >= 0, got channels = ",
                  channels, ", dim = ", dim, ", channel_begin = ", channel_begin);
    Impl::require(dim % 2 == 0, "ChannelEmbedding '", name_,
                  "': the sin-cos initialisation needs an even dim, got ", dim);
    weight_ = matrix(name_, channels_, dim_);
    grad_ = matrix(name_ + ".grad", channels_, dim_);
  }

  // Deterministic; the seed is taken so that every layer initialises through the same call.
  void init(std::uint64_t /*seed*/ = 0) { sincos_1d(weight_, std::size_t(begin_)); }

  // T[c, n, :] += var_embed[c, :], in place.
  void forward(const ExecSpace& space, const Tensor3<T, ExecSpace>& tokens) const {
    check(tokens, "tokens");
    add_channel_rows(space, tokens, weight_);
  }

  // Accumulates grad[c, :] += sum_n dT[c, n, :]; dT itself is the input gradient, unchanged.
  void backward(const ExecSpace& space, const ConstTensor3<T, ExecSpace>& dtokens) {
    check(dtokens, "token gradient");
    sum_channel_rows(space, dtokens, grad_);
  }

  // Every view of parameter storage with its gradient, in a fixed order (model sharding,
  // parallel/sharded_unit.hpp re-points them).
  template <class F>
  void visit_storage(F&& f) {
    f(weight_, grad_);
  }

  void parameters(ParameterList<T, ExecSpace>& list) const {
    Impl::add_parameter<T, ExecSpace>(
        list, name_, Impl::with_leading_one<T, ExecSpace>(weight_.data(), channels_, dim_),
        Impl::with_leading_one<T, ExecSpace>(grad_.data(), channels_, dim_), false);
  }

  const matrix& weight() const { return weight_; }
  const matrix& grad() const { return grad_; }
  int channels() const { return channels_; }
  int channel_begin() const { return begin_; }
  int dim() const { return dim_; }
  const std::string& name() const { return name_; }

 private:
  template <class V>
  void check(const V& t, const char* what) const {
    Impl::require(t.extent(0) == std::size_t(channels_) && t.extent(2) == std::size_t(dim_),
                  "ChannelEmbedding '", name_, "': ", what, " ", Impl::shape_of(t), " must be [",
                  channels_, ", N, ", dim_, "] (channels [", begin_, ", ", begin_ + channels_,
                  "))");
  }

  std::string name_;
  int channels_ = 0, dim_ = 0, begin_ = 0;
  matrix weight_, grad_;
};

// ClimaX's pos_embed [1, L, D] over a grid_h x grid_w grid of patches, initialised to the 2-D
// sin-cos embedding and learnable. Added to aggregated tokens x[B*L, D] (row b*L + l).
template <class T, class ExecSpace>
class PositionEmbedding {
 public:
  using matrix = View2<T, ExecSpace>;

  PositionEmbedding() = default;
  PositionEmbedding(int L, int dim, int grid_h, int grid_w, std::string name = "pos_embed")
      : name_(std::move(name)), L_(L), dim_(dim), grid_h_(grid_h), grid_w_(grid_w) {
    Impl::require(grid_h > 0 && grid_w > 0 && L == grid_h * grid_w, "PositionEmbedding '", name_,
                  "': L = ", L, " must equal grid_h * grid_w = ", grid_h, " * ", grid_w);
    Impl::require(dim > 0 && dim % 4 == 0, "PositionEmbedding '", name_,
                  "': the 2-D sin-cos initialisation needs dim to be a positive multiple of 4, "
                  "got ",
                  dim);
    weight_ = matrix(name_, L_, dim_);
    grad_ = matrix(name_ + ".grad", L_, dim_);
  }

  void init(std::uint64_t /*seed*/ = 0) {
    sincos_2d(weight_, std::size_t(grid_h_), std::size_t(grid_w_));
  }

  // x[b*L + l, :] += pos_embed[l, :], in place: x viewed as [B, L*D] plus a bias of L*D.
  void forward(const ExecSpace& space, const Unmanaged<T**, ExecSpace>& x) const {
    const std::size_t B = batch(x, "tokens");
    add_bias(space, Impl::as_matrix(x, B, std::size_t(L_) * dim_), Impl::flat(weight_));
  }

  // grad[l, :] += sum_b dx[b*L + l, :].
  void backward(const ExecSpace& space, const ConstMatrix<T, ExecSpace>& dx) {
    const std::size_t B = batch(dx, "token gradient");
    sum_rows(space, Impl::as_matrix(dx, B, std::size_t(L_) * dim_), Impl::flat(grad_));
  }

  // Every view of parameter storage with its gradient, in a fixed order (model sharding,
  // parallel/sharded_unit.hpp re-points them).
  template <class F>
  void visit_storage(F&& f) {
    f(weight_, grad_);
  }

  void parameters(ParameterList<T, ExecSpace>& list) const {
    Impl::add_parameter<T, ExecSpace>(
        list, name_, Impl::with_leading_one<T, ExecSpace>(weight_.data(), L_, dim_),
        Impl::with_leading_one<T, ExecSpace>(grad_.data(), L_, dim_), false);
  }

  const matrix& weight() const { return weight_; }
  const matrix& grad() const { return grad_; }
  int patches() const { return L_; }
  int dim() const { return dim_; }
  const std::string& name() const { return name_; }

 private:
  template <class V>
  std::size_t batch(const V& x, const char* what) const {
    Impl::require(x.extent(1) == std::size_t(dim_) && x.extent(0) > 0 &&
                      x.extent(0) % std::size_t(L_) == 0,
                  "PositionEmbedding '", name_, "': ", what, " ", Impl::shape_of(x),
                  " must be [B*L, ", dim_, "] with L = ", L_);
    return x.extent(0) / L_;
  }

  std::string name_;
  int L_ = 0, dim_ = 0, grid_h_ = 0, grid_w_ = 0;
  matrix weight_, grad_;
};

// ClimaX's lead_time_embed = Linear(1 -> D): x[b*L + l, :] += W * lead_time[b] + bias.
// Parameters "lead_time_embed.weight" [D, 1] and ".bias" [D], initialised as every Linear.
template <class T, class ExecSpace>
class LeadTimeEmbedding {
 public:
  using matrix = View2<T, ExecSpace>;

  LeadTimeEmbedding() = default;
  explicit LeadTimeEmbedding(int dim, std::string name = "lead_time_embed")
      : linear_(std::move(name), 1, dim) {}

  void init(std::uint64_t seed, double std = 0.02) { linear_.init(seed, std); }

  // lead_times[B] must stay alive until backward() (as any Linear input).
  void forward(const ExecSpace& space, const Unmanaged<T**, ExecSpace>& x,
               const Unmanaged<const T*, ExecSpace>& lead_times) {
    const std::size_t B = lead_times.extent(0);
    check(x, B, "tokens");
    const matrix e = linear_.forward(space, Impl::as_matrix(lead_times, B, 1));
    add_channel_rows(space, as_samples(x, B), e);
    batch_ = B;
  }

  // Accumulates the gradients of weight and bias; dx passes through unchanged.
  void backward(const ExecSpace& space, const ConstMatrix<T, ExecSpace>& dx) {
    Impl::require(batch_ > 0, "LeadTimeEmbedding '", name(), "': backward() before forward()");
    check(dx, batch_, "token gradient");
    if (de_.extent(0) != batch_) de_ = matrix(name() + ".dembed", batch_, dim());
    Kokkos::deep_copy(space, de_, T(0));
    sum_channel_rows(space, as_samples(dx, batch_), de_);
    linear_.backward(space, de_, /*input_grad=*/false);
  }

  // Every view of parameter storage with its gradient, in a fixed order (model sharding,
  // parallel/sharded_unit.hpp re-points them).
  template <class F>
  void visit_storage(F&& f) {
    linear_.visit_storage(f);
  }

  void parameters(ParameterList<T, ExecSpace>& list) const { linear_.parameters(list); }

  double flops(std::size_t batch) const { return linear_.flops(batch); }

  const Linear<T, ExecSpace>& linear() const { return linear_; }
  int dim() const { return linear_.out_features(); }
  const std::string& name() const { return linear_.name(); }

 private:
  template <class V>
  void check(const V& x, std::size_t B, const char* what) const {
    Impl::require(B > 0 && x.extent(1) == std::size_t(dim()) && x.extent(0) > 0 &&
                      x.extent(0) % B == 0,
                  "LeadTimeEmbedding '", name(), "': ", what, " ", Impl::shape_of(x),
                  " must be [B*L, ", dim(), "] for B = ", B, " lead times");
  }

  // [B*L, D] as [B, L, D]: sample b's tokens are one contiguous block.
  template <class V>
  static auto as_samples(const V& x, std::size_t B) {
    using View = Kokkos::View<typename V::value_type***, Kokkos::LayoutRight,
                              typename V::memory_space, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
    return View(x.data(), B, x.extent(0) / B, x.extent(1));
  }

  Linear<T, ExecSpace> linear_;
  std::size_t batch_ = 0;
  matrix de_;
};

}  // namespace dchag

#endif
