#ifndef DCHAG_TRAIN_GRAD_CLIP_HPP
#define DCHAG_TRAIN_GRAD_CLIP_HPP

// Global gradient-norm clipping as torch.nn.utils.clip_grad_norm_ (2-norm over all gradients,
// error_if_nonfinite=True). It is also where a diverged step is caught: a NaN or Inf gradient
// must stop the run with a message before AdamW spreads it into every moment.
//
// Under sharding (TP, FSDP) the norm is over the whole model, not the local slice: the trainer
// sums grad_sum_squares over the ranks (counting replicated parameters once) and passes the
// result's square root to apply_grad_clip. clip_grad_norm is the single-rank composition.

#include <Kokkos_Core.hpp>
#include <cmath>
#include <string>
#include <vector>

#include <dchag/core/error.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/scalar_traits.hpp>
#include <dchag/kernels/reductions.hpp>
#include <dchag/train/parameter_table.hpp>

namespace dchag {
namespace Impl {

inline void check_max_norm(const char* where, double max_norm) {
  require(std::isfinite(max_norm) && max_norm > 0, where, ": max_norm is ", max_norm,
          ", expected a finite value > 0");
}

}  // namespace Impl

// Sum over all gradients of g^2, in double. May be NaN or Inf: checking is the caller's (or
// clip_grad_norm's) job, after any reduction over ranks. 16-bit gradients go through a table
// (train/parameter_table.hpp), whose reduction reads them as double.
template <class T, class ExecSpace>
double grad_sum_squares(const ExecSpace& space, const ParameterList<T, ExecSpace>& params) {
  if constexpr (is_low_precision_v<T>) {
    return grad_sum_squares(space, ParameterTable<T, ExecSpace>(params));
  } else {
    double total = 0;
    for (const auto& p : params) total += sum_squares(space, p.grad);
    return total;
  }
}

namespace Impl {

// torch's factor max_norm / (total_norm + 1e-6), or 1 when that is not below 1 (the 1e-6
// keeping a zero norm harmless).
inline double grad_clip_factor(const char* where, double max_norm, double total_norm) {
  check_max_norm(where, max_norm);
  require(std::isfinite(total_norm), where, ": the global gradient norm is ", total_norm,
          " (NaN or Inf gradients: the step diverged)");
  const double coef = max_norm / (total_norm + 1e-6);
  return coef >= 1.0 ? 1.0 : coef;
}

}  // namespace Impl

// Scales every gradient by max_norm / (total_norm + 1e-6) when that is below 1 (torch's rule)
// and returns the factor applied (1 when not clipped). total_norm is the global norm, already
// reduced over ranks when the model is sharded.
template <class T, class ExecSpace>
double apply_grad_clip(const ExecSpace& space, const ParameterList<T, ExecSpace>& params,
                       double max_norm, double total_norm) {
  const double coef = Impl::grad_clip_factor("dchag::apply_grad_clip", max_norm, total_norm);
  if (coef >= 1.0) return 1.0;
  if constexpr (is_low_precision_v<T>)
    scale_grads(space, ParameterTable<T, ExecSpace>(params), static_cast<compute_t<T>>(coef));
  else
    for (const auto& p : params) scale(space, p.grad, static_cast<T>(coef));
  return coef;
}

// The same over a table of the parameters: one launch for all of them.
template <class T, class ExecSpace>
double apply_grad_clip(const ExecSpace& space, const ParameterTable<T, ExecSpace>& table,
                       double max_norm, double total_norm) {
  const double coef = Impl::grad_clip_factor("dchag::apply_grad_clip", max_norm, total_norm);
  if (coef >= 1.0) return 1.0;
  scale_grads(space, table, static_cast<compute_t<T>>(coef));
  return coef;
}

// Clips the gradients to a global 2-norm of at most max_norm and returns the norm before
// clipping. Throws dchag::Error naming the parameters whose gradients hold NaN or Inf.
template <class T, class ExecSpace>
double clip_grad_norm(const ExecSpace& space, const ParameterList<T, ExecSpace>& params,
                      double max_norm) {
  const char* where = "dchag::clip_grad_norm";
  Impl::check_max_norm(where, max_norm);
  // One reduction over all of them (through a table built here: this is the single-call
  // convenience, the trainers keep theirs); only a non-finite result pays for one reduction per
  // parameter, to name the culprits.
  const ParameterTable<T, ExecSpace> table(params);
  const double total = grad_sum_squares(space, table);
  std::vector<std::string> bad;
  if (!std::isfinite(total))
    for (const auto& p : params)
      if (!std::isfinite(grad_sum_squares(space, ParameterList<T, ExecSpace>{p})))
        bad.push_back(p.name);
  if (!bad.empty()) {
    std::string names;
    const std::size_t shown = bad.size() < 5 ? bad.size() : 5;
    for (std::size_t i = 0; i < shown; ++i) names += (i ? ", '" : "'") + bad[i] + "'";
    if (bad.size() > shown) names += Impl::concat(" and ", bad.size() - shown, " more");
    throw Error(Impl::concat(where, ": the gradient norm is not finite (NaN or Inf gradients: ",
                             "the step diverged); non-finite gradients in ", names));
  }
  const double norm = std::sqrt(total);
  Impl::require(std::isfinite(norm), where, ": the global gradient norm is ", norm,
                " (the sum of squares overflowed)");
  apply_grad_clip(space, table, max_norm, norm);
  return norm;
}

}  // namespace dchag

#endif
