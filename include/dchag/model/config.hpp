#ifndef DCHAG_MODEL_CONFIG_HPP
#define DCHAG_MODEL_CONFIG_HPP

// The model definition: everything that fixes the set of parameters and the function the
// network computes. It never depends on how many ranks run it.

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include <dchag/core/error.hpp>

namespace dchag {

struct ModelConfig {
  int channels = 16;      // input variables / spectral bands, C
  int out_channels = 16;  // forecast: predicted variables
  int height = 32, width = 64;
  int patch = 4;
  int dim = 128;  // embedding width D
  int depth = 2;
  int heads = 4;
  int mlp_ratio = 4;
  int decoder_depth = 1;  // forecast head: hidden Linear+GELU layers
  // Channel aggregation: token count after each level, ending in 1. {1} is the ClimaX baseline
  // (one cross-attention over all channels); {G, 1} is D-CHAG with G channel groups.
  std::vector<int> levels = {1};
  bool lead_time = true;
  std::uint64_t seed = 0;

  int patches() const { return (height / patch) * (width / patch); }
  int grid_h() const { return height / patch; }
  int grid_w() const { return width / patch; }

  // Refuses nonsense before anything is allocated.
  void validate() const {
    auto positive = [](const char* what, long v) {
      Impl::require(v > 0, "ModelConfig: ", what, " must be positive, got ", v);
    };
    positive("channels", channels);
    positive("out_channels", out_channels);
    positive("height", height);
    positive("width", width);
    positive("patch", patch);
    positive("dim", dim);
    positive("depth", depth);
    positive("heads", heads);
    positive("mlp_ratio", mlp_ratio);
    Impl::require(decoder_depth >= 0, "ModelConfig: decoder_depth must be >= 0, got ",
                  decoder_depth);
    Impl::require(height % patch == 0 && width % patch == 0, "ModelConfig: image ", height, "x",
                  width, " is not divisible by patch ", patch);
    Impl::require(dim % heads == 0, "ModelConfig: dim ", dim, " is not divisible by heads ",
                  heads);
    Impl::require(dim % 4 == 0, "ModelConfig: dim ", dim,
                  " must be divisible by 4 (2-D sin-cos position embedding)");
    Impl::require(!levels.empty() && levels.back() == 1, "ModelConfig: aggregation levels ",
                  levels_string(), " must end in 1");
    int prev = channels;
    for (std::size_t i = 0; i < levels.size(); ++i) {
      Impl::require(levels[i] > 0 && prev % levels[i] == 0 && levels[i] <= prev,
                    "ModelConfig: aggregation level ", i, " reduces ", prev, " tokens to ",
                    levels[i], ", which does not divide them into equal groups (levels ",
                    levels_string(), ", channels ", channels, ")");
      prev = levels[i];
    }
  }

  std::string levels_string() const {
    std::ostringstream s;
    s << '{';
    for (std::size_t i = 0; i < levels.size(); ++i) s << (i ? "," : "") << levels[i];
    s << '}';
    return s.str();
  }

  std::string describe() const {
    std::ostringstream s;
    s << "C=" << channels << " out=" << out_channels << " image=" << height << "x" << width
      << " patch=" << patch << " L=" << patches() << " D=" << dim << " depth=" << depth
      << " heads=" << heads << " mlp_ratio=" << mlp_ratio << " decoder_depth=" << decoder_depth
      << " lead_time=" << (lead_time ? "yes" : "no") << " levels=" << levels_string();
    return s.str();
  }
};

}  // namespace dchag

#endif
