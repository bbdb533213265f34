#ifndef DCHAG_IO_COUNTER_RNG_HPP
#define DCHAG_IO_COUNTER_RNG_HPP

// Counter-based randomness for the data generators. Every random number is a pure function of
// (seed, what it is for, indices), never of how many numbers were drawn before it. That is what
// lets a rank generate only its own channels and still get bit-for-bit the values the full batch
// has, and what makes a sample independent of the batch it is requested in. std:: distributions
// are avoided because their output differs between standard libraries.

#include <cmath>
#include <cstdint>

#include <dchag/core/random.hpp>

namespace dchag {
namespace Impl {

// SplitMix64 (Steele, Lea, Flood 2014): the golden-ratio increment, then the bijective mixer
// the parameter initialisers use too.
inline std::uint64_t splitmix64(std::uint64_t x) { return mix64(x + golden_gamma); }

inline std::uint64_t hash_key(std::uint64_t h) { return splitmix64(h); }

// Order matters: hash_key(s, 1, 2) != hash_key(s, 2, 1).
template <class... Rest>
std::uint64_t hash_key(std::uint64_t h, std::uint64_t next, Rest... rest) {
  return hash_key(splitmix64(h) ^ (next * 0xd6e8feb86659fd93ull + 0x632be59bd9b4e019ull),
                  static_cast<std::uint64_t>(rest)...);
}

// A uniform double in the open interval (0, 1) from the top 53 bits of a hash.
inline double unit_open(std::uint64_t h) {
  return (static_cast<double>(h >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

// An approximately standard normal value from one hash: the sum of four 16-bit uniforms
// (Irwin-Hall), centred and scaled to unit variance. Bounded by +-2 sqrt(3), which is harmless
// for measurement noise, and five times cheaper than Box-Muller in the per-pixel loop.
inline double fast_normal(std::uint64_t h) {
  const auto s = static_cast<double>(static_cast<std::uint32_t>(
      (h & 0xffffu) + ((h >> 16) & 0xffffu) + ((h >> 32) & 0xffffu) + (h >> 48)));
  // Each 16-bit piece (v + 0.5) / 65536 has mean 1/2 and variance ~1/12.
  return ((s + 2.0) * (1.0 / 65536.0) - 2.0) * 1.7320508075688772;
}

// A small stream for drawing model parameters (mode amplitudes, spectra): seeded from a key,
// so each parameter set has its own stream and adding one never shifts another.
class ParameterRng {
 public:
  explicit ParameterRng(std::uint64_t key) : key_(key) {}

  std::uint64_t next() { return splitmix64(key_ + 0x9e3779b97f4a7c15ull * ++count_); }
  double uniform() { return unit_open(next()); }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Integer in [lo, hi]; the modulo bias is irrelevant at the small ranges used here.
  int integer(int lo, int hi) {
    return lo + static_cast<int>(next() % static_cast<std::uint64_t>(hi - lo + 1));
  }
  // Exact standard normal (Box-Muller); used only for a handful of parameters.
  double normal() {
    const double u1 = uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

 private:
  std::uint64_t key_;
  std::uint64_t count_ = 0;
};

}  // namespace Impl
}  // namespace dchag

#endif
