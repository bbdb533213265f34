#ifndef DCHAG_TRAIN_ADAMW_HPP
#define DCHAG_TRAIN_ADAMW_HPP

// AdamW with decoupled weight decay, step for step what torch.optim.AdamW does (single-tensor
// path, amsgrad off), so that a run here and a PyTorch run from the same checkpoint stay
// together. The moments are found per parameter under its name, which is how a checkpoint
// stores them; under FSDP each rank holds the moments of its local slice only, sized by the
// slice. They are stored in two flat buffers and a step is one kernel over every parameter
// (train/parameter_table.hpp): a model has over a thousand tensors at C = 512 channels, and a
// launch per tensor cost more than the arithmetic.
//
// Mixed precision: for a 16-bit parameter type (bf16, fp16: is_low_precision_v<T>) the optimizer
// keeps fp32 master weights, a float copy of every parameter at the moments' offsets, and the
// moments in float (master_t<T>). A step reads the 16-bit gradient as float (times grad_scale,
// which divides out a loss scale), updates master and moments in float, and stores the master
// rounded to nearest even into the parameter. Updates smaller than half a 16-bit ulp, which is
// most of them late in training (lr * m / sqrt(v) ~ lr against a weight ~ 1, where bf16's ulp is
// 2^-7), would otherwise round away every step: in the master they add up until the weight
// moves. For float and double nothing of this exists: the parameters are their own master.
// The master is taken from the parameters by initialize(), and again for any parameter whose
// 16-bit value is no longer its rounded master (written by someone else since the last step:
// a loaded model, a re-initialisation), so that the optimizer never undoes such a write.

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
#include <dchag/core/scalar_traits.hpp>
#include <dchag/core/view.hpp>
#include <dchag/kernels/reductions.hpp>
#include <dchag/train/loss_scaler.hpp>
#include <dchag/train/parameter_table.hpp>

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

// One element's update. The order of operations is torch's, so that float results round the
// same way: p *= 1 - lr wd; m.lerp_(g, 1 - b1); v = v b2 + (1 - b2) g g;
// p += -(lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps).
template <class T>
struct AdamWCoefficients {
  T decay_factor;      // 1 - lr * weight_decay, for the parameters that decay
  T m_weight;          // 1 - beta1, the lerp weight
  bool small_weight;   // torch's lerp switches formula at weight 0.5 for accuracy
  T beta2, v_weight;   // beta2, 1 - beta2
  T neg_step_size;     // -lr / (1 - beta1^t)
  T bc2_sqrt;          // sqrt(1 - beta2^t)
  T eps;

  KOKKOS_INLINE_FUNCTION void update(T& p, const T g, T& m, T& v, const T decay) const {
    const T pi = p * decay;
    const T m0 = m;
    const T mi = small_weight ? m0 + m_weight * (g - m0) : g - (g - m0) * (T(1) - m_weight);
    const T vi = v * beta2 + v_weight * g * g;
    const T denom = math::sqrt(vi) / bc2_sqrt + eps;
    m = mi;
    v = vi;
    p = pi + neg_step_size * mi / denom;
  }

  // The same update of n consecutive elements in three passes, for host loops: a square root
  // that may set errno (the default, -fmath-errno) is a call the compiler cannot vectorise, and
  // in one loop it keeps the whole update scalar. Apart, only the square roots are; the
  // operations and their order per element are update()'s, so the results are bit for bit the
  // same.
  KOKKOS_INLINE_FUNCTION void update_block(T* p, const T* g, T* m, T* v, const T decay,
                                           const std::int64_t n, T* root) const {
    for (std::int64_t j = 0; j < n; ++j) {
      const T vi = v[j] * beta2 + v_weight * g[j] * g[j];
      v[j] = vi;
      root[j] = vi;
    }
    for (std::int64_t j = 0; j < n; ++j) root[j] = math::sqrt(root[j]);
    if (small_weight) {
      for (std::int64_t j = 0; j < n; ++j) {
        const T pi = p[j] * decay;
        const T mi = m[j] + m_weight * (g[j] - m[j]);
        m[j] = mi;
        p[j] = pi + neg_step_size * mi / (root[j] / bc2_sqrt + eps);
      }
    } else {
      for (std::int64_t j = 0; j < n; ++j) {
        const T pi = p[j] * decay;
        const T mi = g[j] - (g[j] - m[j]) * (T(1) - m_weight);
        m[j] = mi;
        p[j] = pi + neg_step_size * mi / (root[j] / bc2_sqrt + eps);
      }
    }
  }
};

// The step of every parameter in one launch: a team per chunk of the table, the moments of a
// tensor at its offset in the flat moment buffers.
template <class T, class ExecSpace>
struct AdamWMultiUpdate {
  static_assert(!is_low_precision_v<T>, "16-bit parameters update through AdamWMasterUpdate");
  using member_type = typename Kokkos::TeamPolicy<ExecSpace>::member_type;
  typename ParameterTable<T, ExecSpace>::TensorView tensors;
  typename ParameterTable<T, ExecSpace>::ChunkView chunks;
  View1<T, ExecSpace> m, v;
  AdamWCoefficients<T> c;

  KOKKOS_INLINE_FUNCTION void operator()(const member_type& team) const {
    const TableChunk k = chunks(team.league_rank());
    const TableTensor<T> t = tensors(k.tensor);
    T* const p = t.value;
    const T* const g = t.grad;
    T* const mt = m.data() + t.offset;
    T* const vt = v.data() + t.offset;
    const T decay = t.decay ? c.decay_factor : T(1);
    const AdamWCoefficients<T> cc = c;
    if constexpr (host_team<ExecSpace>()) {
      if (team.team_size() == 1) {
        constexpr std::int64_t block = 256;
        T root[block];
        for (std::int64_t b = k.begin; b < k.end; b += block)
          cc.update_block(p + b, g + b, mt + b, vt + b, decay,
                          k.end - b < block ? k.end - b : block, root);
        return;
      }
    }
    team_for<ExecSpace>(team, k.begin, k.end,
                        [&](std::int64_t i) { cc.update(p[i], g[i], mt[i], vt[i], decay); });
  }
};

// The same step for 16-bit parameters: master weights and moments in float (M), the gradient
// read as M times grad_scale, the result rounded into the parameter.
template <class T, class ExecSpace>
struct AdamWMasterUpdate {
  using M = master_t<T>;
  using member_type = typename Kokkos::TeamPolicy<ExecSpace>::member_type;
  typename ParameterTable<T, ExecSpace>::TensorView tensors;
  typename ParameterTable<T, ExecSpace>::ChunkView chunks;
  View1<M, ExecSpace> master, m, v;
  AdamWCoefficients<M> c;
  M grad_scale;

  KOKKOS_INLINE_FUNCTION void operator()(const member_type& team) const {
    const TableChunk k = chunks(team.league_rank());
    const TableTensor<T> t = tensors(k.tensor);
    T* const p = t.value;
    const T* const g = t.grad;
    M* const wt = master.data() + t.offset;
    M* const mt = m.data() + t.offset;
    M* const vt = v.data() + t.offset;
    const M decay = t.decay ? c.decay_factor : M(1);
    const AdamWCoefficients<M> cc = c;
    const M scale = grad_scale;
    team_for<ExecSpace>(team, k.begin, k.end, [&](std::int64_t i) {
      const T stored = p[i];
      M w = wt[i];
      if (T(w).bits != stored.bits) w = M(stored);  // written since the last step
      cc.update(w, M(g[i]) * scale, mt[i], vt[i], decay);
      wt[i] = w;
      p[i] = T(w);
    });
  }
};

// dst[i] = src[i], converting (the master weights from the parameters).
template <class Src, class Dst>
struct AdamWConvert {
  Src src;
  Dst dst;
  KOKKOS_INLINE_FUNCTION void operator()(std::int64_t i) const {
    dst(i) = static_cast<typename Dst::non_const_value_type>(src(i));
  }
};

}  // namespace Impl

template <class T, class ExecSpace>
class AdamW {
 public:
  // What weights and moments are kept in: float for 16-bit parameters, else T itself.
  using master_type = master_t<T>;
  static constexpr bool has_master = is_low_precision_v<T>;

  // First and second moment of one parameter, flat like its value and gradient, and for 16-bit
  // parameters its master weights (empty otherwise): views into the optimizer's flat buffers.
  struct Moments {
    View1<master_type, ExecSpace> m, v, master;
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

  // (Re)allocates zero moments for exactly these parameters and restarts the step count. All
  // moments live in two flat buffers (one allocation each, one kernel per step), each
  // parameter's at its own offset; the master weights, for 16-bit parameters, in a third, copied
  // from the parameters now.
  void initialize(const ParameterList<T, ExecSpace>& params) {
    std::map<std::string, std::size_t> index;
    std::vector<std::int64_t> offsets;
    std::int64_t total = 0;
    for (const auto& p : params) {
      Impl::require(index.emplace(p.name, offsets.size()).second, "dchag::AdamW: parameter '",
                    p.name, "' appears twice in the parameter list");
      Impl::require(p.grad.size() == p.size(), "dchag::AdamW: parameter '", p.name, "' has ",
                    p.size(), " values but ", p.grad.size(), " gradient entries");
      offsets.push_back(total);
      // 64-byte boundaries, as separate allocations had them.
      total += static_cast<std::int64_t>((p.size() + 15) / 16 * 16);
    }
    View1<master_type, ExecSpace> m("adamw.m", static_cast<std::size_t>(total));
    View1<master_type, ExecSpace> v("adamw.v", static_cast<std::size_t>(total));
    View1<master_type, ExecSpace> master;
    if constexpr (has_master)
      master = View1<master_type, ExecSpace>("adamw.master", static_cast<std::size_t>(total));
    std::vector<Moments> state;
    for (std::size_t i = 0; i < params.size(); ++i) {
      const auto range = Kokkos::make_pair(static_cast<std::size_t>(offsets[i]),
                                           static_cast<std::size_t>(offsets[i]) + params[i].size());
      Moments s{Kokkos::subview(m, range), Kokkos::subview(v, range), {}};
      if constexpr (has_master) {
        s.master = Kokkos::subview(master, range);
        using Src = Unmanaged<T*, ExecSpace>;
        Kokkos::parallel_for("dchag::AdamW::master",
                             Kokkos::RangePolicy<ExecSpace, Kokkos::IndexType<std::int64_t>>(
                                 0, static_cast<std::int64_t>(params[i].size())),
                             Impl::AdamWConvert<Src, View1<master_type, ExecSpace>>{
                                 params[i].value, s.master});
      }
      state.push_back(s);
    }
    if constexpr (has_master) Kokkos::fence();
    index_ = std::move(index);
    state_ = std::move(state);
    offsets_ = std::move(offsets);
    m_ = m;
    v_ = v;
    master_ = master;
    names_.clear();
    for (const auto& p : params) names_.push_back(p.name);
    table_.invalidate();
    initialized_ = true;
    step_count_ = 0;
  }

  // One AdamW step at the configured learning rate, or at `lr` (from a schedule). Gradients are
  // used as they are times grad_scale (1 / the loss scale of train/loss_scaler.hpp, times a
  // clipping factor if wanted): for 16-bit gradients the product is taken in float, as they are
  // read, never stored back in 16 bits where an fp16 gradient divided by 2^16 would underflow.
  void step(const ExecSpace& space, const ParameterList<T, ExecSpace>& params) {
    step(space, params, config_.lr);
  }
  void step(const ExecSpace& space, const ParameterList<T, ExecSpace>& params, double lr,
            double grad_scale = 1.0) {
    Impl::require(std::isfinite(grad_scale) && grad_scale > 0, "dchag::AdamW: grad_scale is ",
                  grad_scale, ", expected a finite value > 0");
    Impl::check_adamw_lr(lr);
    if (!initialized_) initialize(params);
    prepare(params);

    const std::int64_t t = step_count_ + 1;
    const double b1 = config_.beta1, b2 = config_.beta2;
    const double bc1 = 1.0 - std::pow(b1, static_cast<double>(t));
    const double bc2 = 1.0 - std::pow(b2, static_cast<double>(t));
    using M = master_type;
    Impl::AdamWCoefficients<M> c;
    c.m_weight = static_cast<M>(1.0 - b1);
    c.small_weight = (1.0 - b1) < 0.5;
    c.beta2 = static_cast<M>(b2);
    c.v_weight = static_cast<M>(1.0 - b2);
    // Checked before the conversion to T, in which the update runs (an out-of-range conversion
    // is undefined): a rate that is finite as a double can still overflow a float and turn
    // every parameter into NaN in one step.
    const double largest = static_cast<double>(std::numeric_limits<M>::max());
    Impl::require(std::fabs(lr / bc1) <= largest &&
                      std::fabs(1.0 - lr * config_.weight_decay) <= largest &&
                      grad_scale <= largest,
                  "dchag::AdamW: learning rate ", lr, " overflows the ",
                  sizeof(M) == 4 ? "float" : "double", has_master ? " master weights" :
                  " parameters", " (step size ", lr / bc1,
                  ", decay factor ", 1.0 - lr * config_.weight_decay, ", gradient scale ",
                  grad_scale, ")");
    c.neg_step_size = static_cast<M>(-(lr / bc1));
    c.bc2_sqrt = static_cast<M>(std::sqrt(bc2));
    c.eps = static_cast<M>(config_.eps);
    c.decay_factor = static_cast<M>(1.0 - lr * config_.weight_decay);

    if (table_.chunk_count() > 0) {
      if constexpr (has_master) {
        Kokkos::parallel_for("dchag::AdamW::step", table_.policy(space),
                             Impl::AdamWMasterUpdate<T, ExecSpace>{
                                 table_.tensors(), table_.chunks(), master_, m_, v_, c,
                                 static_cast<M>(grad_scale)});
      } else {
        if (grad_scale != 1.0) scale_grads(space, table_, static_cast<T>(grad_scale));
        Kokkos::parallel_for("dchag::AdamW::step", table_.policy(space),
                             Impl::AdamWMultiUpdate<T, ExecSpace>{table_.tensors(),
                                                                   table_.chunks(), m_, v_, c});
      }
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

  // The loss scale the gradients it steps from carry (fp16; train/loss_scaler.hpp): part of
  // the optimizer's state, so that a checkpoint of the optimizer resumes the scale too. The
  // training loop updates it; step() is told the scale to divide out (grad_scale).
  LossScaler<T>& loss_scaler() { return loss_scaler_; }
  const LossScaler<T>& loss_scaler() const { return loss_scaler_; }

  const AdamWConfig& config() const { return config_; }
  void set_config(const AdamWConfig& config) {
    Impl::check_adamw_config(config);
    config_ = config;
  }

 private:
  // Points the table at this list's tensors and their moments. The list is rebuilt from the
  // model before every step, so it is matched by name (order may change) whenever it is not the
  // list of the last step (same names, pointers and sizes: then nothing is done, and nothing
  // allocated).
  void prepare(const ParameterList<T, ExecSpace>& params) {
    if (table_.matches(params) && table_names_.size() == params.size()) {
      bool same = true;
      for (std::size_t i = 0; i < params.size() && same; ++i)
        same = table_names_[i] == params[i].name;
      if (same) return;
    }
    const std::vector<std::size_t> slot = match(params);
    std::vector<std::int64_t> offsets(params.size());
    for (std::size_t i = 0; i < params.size(); ++i) offsets[i] = offsets_[slot[i]];
    table_.build(params, offsets, static_cast<std::int64_t>(m_.extent(0)));
    table_names_.clear();
    for (const auto& p : params) table_names_.push_back(p.name);
  }

  // The slot of each parameter's moments. The list must cover the state exactly: a missing or
  // resized parameter would otherwise silently train with someone else's moments.
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
  LossScaler<T> loss_scaler_;
  std::map<std::string, std::size_t> index_;
  std::vector<Moments> state_;
  std::vector<std::int64_t> offsets_;  // of each slot's moments in m_, v_ (and master_)
  View1<master_type, ExecSpace> m_, v_, master_;
  std::vector<std::string> names_;
  // The last step's list, as a table into m_ and v_, and its names.
  ParameterTable<T, ExecSpace> table_;
  std::vector<std::string> table_names_;
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
