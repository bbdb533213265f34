#ifndef DCHAG_MODEL_DROPOUT_CONTEXT_HPP
#define DCHAG_MODEL_DROPOUT_CONTEXT_HPP

// Training or evaluation, and what a dropout mask needs to know about the forward pass that
// draws it (kernels/dropout.hpp): ClimaX's regularisation is timm's, dropout after the position
// embedding (pos_drop), after the attention projection (proj_drop), after the MLP's GELU and
// fc2 (drop1, drop2), and drop-path on both residual branches of every block, with the rate of
// block i rising linearly to drop_path_rate at the last block. All of it is off in evaluation.

#include <cstdint>
#include <string>

#include <dchag/core/error.hpp>
#include <dchag/kernels/dropout.hpp>

namespace dchag {

// How a model's forward runs: evaluation (the default; deterministic) or a training step,
// whose number keys the dropout masks (a fixed step repeats them: gradient checks, resumed
// runs).
struct ForwardMode {
  bool training = false;
  std::uint64_t step = 0;

  static ForwardMode evaluation() { return {}; }
  static ForwardMode train(std::uint64_t step) { return {true, step}; }
};

// The rates of a block or an encoder (ModelConfig::drop_rate, drop_path_rate).
struct DropoutRates {
  double drop = 0;  // dropout after attention proj, GELU and fc2 (and pos_drop in the model)
  double path = 0;  // drop-path; in an Encoder, the rate of its last block
  bool any() const { return drop > 0 || path > 0; }
};

// What the sites of one forward pass share: whether it trains, the model's seed, the step, and
// the global index of the rank's first sample (data-parallel and fsdp ranks hold different
// samples; every rank of a tensor-parallel group the same ones).
struct DropoutContext {
  bool training = false;
  std::uint64_t seed = 0, step = 0, sample_begin = 0;

  // The site `name` at `rate`; inactive (the identity) in evaluation.
  DropoutSite site(const std::string& name, double rate) const {
    if (!training || rate == 0) return {};
    return dropout_site(seed, step, name, rate);
  }
};

namespace Impl {

inline void check_rates(const char* what, const std::string& name, const DropoutRates& r) {
  require(r.drop >= 0 && r.drop < 1, what, " '", name,
          "': drop_rate is a probability in [0, 1), got ", r.drop);
  require(r.path >= 0 && r.path < 1, what, " '", name,
          "': drop_path_rate is a probability in [0, 1), got ", r.path);
}

// ClimaX's stochastic-depth schedule: torch.linspace(0, rate, depth)[i] (0 for a single block).
inline double block_drop_path_rate(double rate, int depth, int i) {
  return depth > 1 ? rate * double(i) / double(depth - 1) : 0.0;
}

}  // namespace Impl
}  // namespace dchag

#endif
