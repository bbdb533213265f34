#ifndef DCHAG_TRAIN_ADAMW_HPP
#define DCHAG_TRAIN_ADAMW_HPP

// AdamW with decoupled weight decay, step for step what torch.optim.AdamW does (single-tensor
// path, amsgrad off), so that a run here and a PyTorch run from the same checkpoint stay
// together. The moments live per parameter under its name, which is how a checkpoint stores
// them; under FSDP each rank holds the moments of its local slice only, sized by the slice.

#include <Kokkos_Core.hpp>
#include <cmath>
#include <limits>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <dchag/core/error.hpp>
#include <dchag/core/kokkos_compat.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/view.hpp>
#include <dchag/kernels/reductions.hpp>

namespace dchag {

// Defaults are PyTorch's; climax() gives the ClimaX pre-training settings.
struct AdamWConfig {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;

  static AdamWConfig climax() {
    AdamWConfig c;
    c.lr = 5e-4;
    c.beta2 = 0.95;
    c.weight_decay = 1e-5;
    return c;
  }
};

namespace Impl {

inline void check_adamw_lr(double lr) {
  require(std::isfinite(lr) && lr >= 0, "dchag::AdamW: learning rate is ", lr,
          ", expected a finite value >= 0");
}

inline void check_adamw_config(const AdamWConfig& c) {
  check_adamw_lr(c.lr);
  require(c.beta1 >= 0 && c.beta1 < 1, "dchag::AdamW: beta1 is ", c.beta1,
          ", expected a value in [0, 1)");
  require(c.beta2 >= 0 && c.beta2 < 1, "dchag::AdamW: beta2 is ", c.beta2,
          ", expected a value in [0, 1)");
  require(std::isfinite(c.eps) && c.eps >= 0, "dchag::AdamW: eps is ", c.eps,
          ", expected a finite value >= 0");
  require(std::isfinite(c.weight_decay) && c.weight_decay >= 0,
          "dchag::AdamW: weight_decay is ", c.weight_decay, ", expected a finite value >= 0");
}

// One parameter's update. The order of operations is torch's, so that float results round the
// same way: p *= 1 - lr wd; m.lerp_(g, 1 - b1); v = v b2 + (1 - b2) g g;
// p += -(lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps).
template <class T, class ExecSpace>
struct AdamWUpdate {
  Unmanaged<T*, ExecSpace> p;
  Unmanaged<T*, ExecSpace> g;
  View1<T, ExecSpace> m, v;
  T decay_factor;      // 1 - lr * weight_decay, or 1 when the parameter does not decay
  T m_weight;          // 1 - beta1, the lerp weight
  bool small_weight;   // torch's lerp switches formula at weight 0.5 for accuracy
  T beta2, v_weight;   // beta2, 1 - beta2
  T neg_step_size;     // -lr / (1 - beta1^t)
  T bc2_sqrt;          // sqrt(1 - beta2^t)
  T eps;

  KOKKOS_INLINE_FUNCTION void operator()(std::int64_t i) const {
    const T gi = g(i);
    const T pi = p(i) * decay_factor;
    const T m0 = m(i);
    const T mi = small_weight ? m0 + m_weight * (gi - m0) : gi - (gi - m0) * (T(1) - m_weight);
    const T vi = v(i) * beta2 + v_weight * gi * gi;
    const T denom = math::sqrt(vi) / bc2_sqrt + eps;
    m(i) = mi;
    v(i) = vi;
    p(i) = pi + neg_step_size * mi / denom;
  }
};

}  // namespace Impl

template <class T, class ExecSpace>
class AdamW {
 public:
  // First and second moment of one parameter, flat like its value and gradient.
  struct Moments {
    View1<T, ExecSpace> m, v;
  };

  // The moments are allocated (zero) at the first step, or now when the parameters are given
  // (needed before loading them from a checkpoint).
  explicit AdamW(const AdamWConfig& config = AdamWConfig()) : config_(config) {
    Impl::check_adamw_config(config_);
  }
  AdamW(const ParameterList<T, ExecSpace>& params, const AdamWConfig& config = AdamWConfig())
      : AdamW(config) {
    initialize(params);
  }

  // (Re)allocates zero moments for exactly these parameters and restarts the step count.
  void initialize(const ParameterList<T, ExecSpace>& params) {
    std::map<std::string, std::size_t> index;
    std::vector<Moments> state;
    for (const auto& p : params) {
      Impl::require(index.emplace(p.name, state.size()).second, "dchag::AdamW: parameter '",
                    p.name, "' appears twice in the parameter list");
      Impl::require(p.grad.size() == p.size(), "dchag::AdamW: parameter '", p.name, "' has ",
                    p.size(), " values but ", p.grad.size(), " gradient entries");
      state.push_back({View1<T, ExecSpace>("adamw.m." + p.name, p.size()),
                       View1<T, ExecSpace>("adamw.v." + p.name, p.size())});
    }
    index_ = std::move(index);
    state_ = std::move(state);
    names_.clear();
    for (const auto& p : params) names_.push_back(p.name);
    initialized_ = true;
    step_count_ = 0;
  }

  // One AdamW step at the configured learning rate, or at `lr` (from a schedule). Gradients are
  // used as they are: clip them first if wanted.
  void step(const ExecSpace& space, const ParameterList<T, ExecSpace>& params) {
    step(space, params, config_.lr);
  }
  void step(const ExecSpace& space, const ParameterList<T, ExecSpace>& params, double lr) {
    Impl::check_adamw_lr(lr);
    if (!initialized_) initialize(params);
    const std::vector<std::size_t> slot = match(params);

    const std::int64_t t = step_count_ + 1;
    const double b1 = config_.beta1, b2 = config_.beta2;
    const double bc1 = 1.0 - std::pow(b1, static_cast<double>(t));
    const double bc2 = 1.0 - std::pow(b2, static_cast<double>(t));
    Impl::AdamWUpdate<T, ExecSpace> update;
    update.m_weight = static_cast<T>(1.0 - b1);
    update.small_weight = (1.0 - b1) < 0.5;
    update.beta2 = static_cast<T>(b2);
    update.v_weight = static_cast<T>(1.0 - b2);
    // Checked before the conversion to T, in which the update runs (an out-of-range conversion
    // is undefined): a rate that is finite as a double can still overflow a float and turn
    // every parameter into NaN in one step.
    const double largest = static_cast<double>(std::numeric_limits<T>::max());
    Impl::require(std::fabs(lr / bc1) <= largest &&
                      std::fabs(1.0 - lr * config_.weight_decay) <= largest,
                  "dchag::AdamW: learning rate ", lr, " overflows the ",
                  sizeof(T) == 4 ? "float" : "double", " parameters (step size ", lr / bc1,
                  ", decay factor ", 1.0 - lr * config_.weight_decay, ")");
    update.neg_step_size = static_cast<T>(-(lr / bc1));
    update.bc2_sqrt = static_cast<T>(std::sqrt(bc2));
    update.eps = static_cast<T>(config_.eps);
    const T decay_factor = static_cast<T>(1.0 - lr * config_.weight_decay);

    for (std::size_t i = 0; i < params.size(); ++i) {
      const auto& p = params[i];
      update.p = p.value;
      update.g = p.grad;
      update.m = state_[slot[i]].m;
      update.v = state_[slot[i]].v;
      update.decay_factor = p.decay ? decay_factor : T(1);
      Kokkos::parallel_for("dchag::AdamW::step", Impl::flat_policy(space, p.size()), update);
    }
    step_count_ = t;
  }

  // The moments of one parameter, by its name (for checkpoints).
  const Moments& state(const std::string& name) const {
    Impl::require(initialized_, "dchag::AdamW: no state yet for parameter '", name,
                  "' (state is allocated by the first step, or by initialize())");
    const auto it = index_.find(name);
    Impl::require(it != index_.end(), "dchag::AdamW: no state for parameter '", name, "'");
    return state_[it->second];
  }
  bool has_state() const { return initialized_; }
  // Parameter names in the order the state was allocated.
  const std::vector<std::string>& state_names() const { return names_; }

  // Number of steps taken: t - 1 of the next step's bias correction.
  std::int64_t step_count() const { return step_count_; }
  void set_step_count(std::int64_t steps) {
    Impl::require(steps >= 0, "dchag::AdamW: step count ", steps, " must be >= 0");
    step_count_ = steps;
  }

  const AdamWConfig& config() const { return config_; }
  void set_config(const AdamWConfig& config) {
    Impl::check_adamw_config(config);
    config_ = config;
  }

 private:
  // The slot of each parameter's moments. The list is rebuilt from the model before every
  // step, so it is matched by name (order may change), and must cover the state exactly: a
  // missing or resized parameter would otherwise silently train with someone else's moments.
  std::vector<std::size_t> match(const ParameterList<T, ExecSpace>& params) const {
    const char* where = "dchag::AdamW::step";
    std::vector<std::size_t> slot(params.size());
    std::vector<char> seen(state_.size(), 0);
    for (std::size_t i = 0; i < params.size(); ++i) {
      const auto& p = params[i];
      const auto it = index_.find(p.name);
      Impl::require(it != index_.end(), where, ": parameter '", p.name,
                    "' has no optimiser state (the state holds ", state_.size(),
                    " parameters; the parameter list changed since the state was allocated)");
      const std::size_t s = it->second;
      Impl::require(!seen[s], where, ": parameter '", p.name, "' appears twice in the list");
      seen[s] = 1;
      Impl::require(state_[s].m.size() == p.size() && p.grad.size() == p.size(), where,
                    ": parameter '", p.name, "' has ", p.size(), " values and ", p.grad.size(),
                    " gradient entries, but its optimiser state has ", state_[s].m.size());
      slot[i] = s;
    }
    for (std::size_t s = 0; s < state_.size(); ++s)
      Impl::require(seen[s], where, ": optimiser state for parameter '", names_[s],
                    "' but no such parameter in the list (", params.size(), " given, ",
                    state_.size(), " expected)");
    return slot;
  }

  AdamWConfig config_;
  bool initialized_ = false;
  std::int64_t step_count_ = 0;
  std::map<std::string, std::size_t> index_;
  std::vector<Moments> state_;
  std::vector<std::string> names_;
};

// Sets every gradient to zero (parameter gradients accumulate across backward calls).
template <class T, class ExecSpace>
void zero_grad(const ExecSpace& space, const ParameterList<T, ExecSpace>& params) {
  for (const auto& p : params) {
    const auto g = p.grad;
    Kokkos::parallel_for(
        "dchag::zero_grad", Impl::flat_policy(space, g.size()),
        KOKKOS_LAMBDA(std::int64_t i) { g(i) = T(0); });
  }
}

}  // namespace dchag

#endif
