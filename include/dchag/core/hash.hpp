#ifndef DCHAG_CORE_HASH_HPP
#define DCHAG_CORE_HASH_HPP

// 64-bit FNV-1a (http://www.isthe.com/chongo/tech/comp/fnv/): stable across runs, compilers and
// platforms, which std::hash is not required to be. It names random streams after parameters,
// compares configurations between ranks and checks the bytes of checkpoint tensors, so one
// definition serves all three. A tensor's checksum is reproducible with a few lines of Python.

#include <cstddef>
#include <cstdint>
#include <string>

namespace dchag {
namespace Impl {

class Fnv1a {
 public:
  static constexpr std::uint64_t offset_basis = 0xcbf29ce484222325ULL;
  static constexpr std::uint64_t prime = 0x100000001b3ULL;

  // Feeding bytes in pieces gives the hash of their concatenation.
  void update(const void* data, std::size_t n) {
    const unsigned char* p = static_cast<const unsigned char*>(data);
    std::uint64_t h = h_;
    for (std::size_t i = 0; i < n; ++i) {
      h ^= p[i];
      h *= prime;
    }
    h_ = h;
  }
  std::uint64_t value() const { return h_; }

 private:
  std::uint64_t h_ = offset_basis;
};

inline std::uint64_t fnv1a(const std::string& text) {
  Fnv1a h;
  h.update(text.data(), text.size());
  return h.value();
}

}  // namespace Impl
}  // namespace dchag

#endif
