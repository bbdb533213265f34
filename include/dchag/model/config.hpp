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

  // Valid once validate() passed (which bounds the product to fit an int).
  int patches() const { return (height / patch) * (width / patch); }
  int grid_h() const { return height / patch; }
  int grid_w() const { return width / patch; }

  // Upper bounds far above any model this library trains (ClimaX: 48 variables, 128 x 256,
  // D = 1024, depth 8), low enough that every size the model derives from them (patches,
  // parameter counts, per-sample activations) is computed without overflow. They are checked,
  // like the rest, before anything is allocated: a corrupt checkpoint or a typo must not reach
  // an allocation of terabytes or an integer that wraps around.
  static constexpr long max_channels = 1L << 16;
  static constexpr long max_image_side = 1L << 16;
  static constexpr long max_patch = 1L << 10;
  static constexpr long max_patches = 1L << 24;
  static constexpr long max_dim = 1L << 16;
  static constexpr long max_depth = 1L << 12;
  static constexpr long max_mlp_ratio = 64;
  static constexpr long max_levels = 64;

  // Refuses nonsense before anything is allocated.
  void validate() const {
    auto in_range = [](const char* what, long v, long hi) {
      Impl::require(v > 0, "ModelConfig: ", what, " must be positive, got ", v);
      Impl::require(v <= hi, "ModelConfig: ", what, " = ", v, " exceeds the limit of ", hi);
    };
    in_range("channels", channels, max_channels);
    in_range("out_channels", out_channels, max_channels);
    in_range("height", height, max_image_side);
    in_range("width", width, max_image_side);
    in_range("patch", patch, max_patch);
    in_range("dim", dim, max_dim);
    in_range("depth", depth, max_depth);
    in_range("heads", heads, max_dim);
    in_range("mlp_ratio", mlp_ratio, max_mlp_ratio);
    Impl::require(decoder_depth <= max_depth, "ModelConfig: decoder_depth = ", decoder_depth,
                  " exceeds the limit of ", max_depth);
    Impl::require(decoder_depth >= 0, "ModelConfig: decoder_depth must be >= 0, got ",
                  decoder_depth);
    Impl::require(height % patch == 0 && width % patch == 0, "ModelConfig: image ", height, "x",
                  width, " is not divisible by patch ", patch);
    const long long patch_count = (long long)(height / patch) * (long long)(width / patch);
    Impl::require(patch_count <= max_patches, "ModelConfig: image ", height, "x", width,
                  " with patch ", patch, " has ", patch_count, " patches, more than the limit of ",
                  max_patches);
    Impl::require(dim % heads == 0, "ModelConfig: dim ", dim, " is not divisible by heads ",
                  heads);
    Impl::require(dim % 4 == 0, "ModelConfig: dim ", dim,
                  " must be divisible by 4 (2-D sin-cos position embedding)");
    Impl::require(levels.size() <= static_cast<std::size_t>(max_levels), "ModelConfig: ",
                  levels.size(), " aggregation levels exceed the limit of ", max_levels);
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
