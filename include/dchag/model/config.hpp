#ifndef DCHAG_MODEL_CONFIG_HPP
#define DCHAG_MODEL_CONFIG_HPP

// The model definition: everything that fixes the set of parameters and the function the
// network computes. It never depends on how many ranks run it.

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <dchag/core/error.hpp>

namespace dchag {
namespace Impl {

// The shortest decimal text that reads back as exactly x ("4", "2.5", "0.1"): configuration
// descriptions are compared between ranks and stored in checkpoints.
inline std::string round_trip_text(double x) {
  char text[32];
  for (int digits = 15; digits <= 17; ++digits) {
    std::snprintf(text, sizeof text, "%.*g", digits, x);
    if (std::strtod(text, nullptr) == x) break;
  }
  return text;
}

// "a,b,c": how variable names appear in descriptions and checkpoints (names hold no comma).
inline std::string join_names(const std::vector<std::string>& names) {
  std::string s;
  for (std::size_t i = 0; i < names.size(); ++i) s += (i ? "," : "") + names[i];
  return s;
}

// The inverse of join_names ("" is no name at all).
inline std::vector<std::string> split_names(const std::string& text) {
  std::vector<std::string> names;
  if (text.empty()) return names;
  std::size_t begin = 0;
  for (;;) {
    const std::size_t end = text.find(',', begin);
    names.push_back(text.substr(begin, end == std::string::npos ? end : end - begin));
    if (end == std::string::npos) return names;
    begin = end + 1;
  }
}

}  // namespace Impl

// The names of C variables nobody named: "var0", "var1", ...
inline std::vector<std::string> default_variable_names(int channels) {
  std::vector<std::string> names;
  for (int c = 0; c < channels; ++c) names.push_back("var" + std::to_string(c));
  return names;
}

struct ModelConfig {
  int channels = 16;  // input variables / spectral bands, C
  // The input variables' names, in channel order (empty: default_variable_names(channels)), and
  // the forecast's variables, any of them in any order (empty: all, in input order). As in
  // ClimaX, the head predicts every input variable and the prediction the loss and metrics see
  // is the selection of the output variables: out_channels() of them.
  std::vector<std::string> variables;
  std::vector<std::string> out_variables;
  int height = 32, width = 64;
  int patch = 4;
  int dim = 128;  // embedding width D
  int depth = 2;
  int heads = 4;
  double mlp_ratio = 4.0;  // MLP hidden width int(dim * mlp_ratio), as timm / ClimaX
  int decoder_depth = 1;  // forecast head: hidden Linear+GELU layers
  // Channel aggregation: token count after each level, ending in 1. {1} is the ClimaX baseline
  // (one cross-attention over all channels); {G, 1} is D-CHAG with G channel groups.
  std::vector<int> levels = {1};
  bool lead_time = true;
  std::uint64_t seed = 0;
  // Regularisation in training (model/dropout_context.hpp; never in evaluation). drop_rate: the
  // dropout after the position embedding (pos_drop), the attention projection and both MLP
  // layers (timm's proj_drop, Mlp drop1 / drop2); drop_path_rate: stochastic depth of the last
  // block, rising linearly from 0 at block 0. 0 leaves the network deterministic; ClimaX
  // trains with 0.1 and 0.1 (climax_dropout() below).
  double drop_rate = 0.0;
  double drop_path_rate = 0.0;

  // Valid once validate() passed (which bounds the product to fit an int).
  int patches() const { return (height / patch) * (width / patch); }
  int grid_h() const { return height / patch; }
  int grid_w() const { return width / patch; }

  std::vector<std::string> variable_names() const {
    return variables.empty() ? default_variable_names(channels) : variables;
  }
  std::vector<std::string> output_variable_names() const {
    return out_variables.empty() ? variable_names() : out_variables;
  }
  int out_channels() const {
    return out_variables.empty() ? channels : static_cast<int>(out_variables.size());
  }
  // Channel index of each output variable (valid once validate() passed).
  std::vector<int> output_indices() const {
    const std::map<std::string, int> channel = channel_of_name();
    std::vector<int> ids;
    for (const auto& name : output_variable_names()) ids.push_back(channel.at(name));
    return ids;
  }
  // Whether the input variables are named as default_variable_names(channels) names them, and
  // the outputs are all of them in input order: the definitions the description leaves implicit.
  bool default_variables() const {
    for (std::size_t c = 0; c < variables.size(); ++c)
      if (variables[c] != "var" + std::to_string(c)) return false;
    return true;
  }
  bool all_outputs() const { return out_variables.empty() || out_variables == variable_names(); }

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
  static constexpr double max_mlp_ratio = 64;
  static constexpr long max_levels = 64;

  // Refuses nonsense before anything is allocated.
  void validate() const {
    auto in_range = [](const char* what, long v, long hi) {
      Impl::require(v > 0, "ModelConfig: ", what, " must be positive, got ", v);
      Impl::require(v <= hi, "ModelConfig: ", what, " = ", v, " exceeds the limit of ", hi);
    };
    in_range("channels", channels, max_channels);
    check_variables();
    in_range("height", height, max_image_side);
    in_range("width", width, max_image_side);
    in_range("patch", patch, max_patch);
    in_range("dim", dim, max_dim);
    in_range("depth", depth, max_depth);
    in_range("heads", heads, max_dim);
    Impl::require(std::isfinite(mlp_ratio) && mlp_ratio > 0 && mlp_ratio <= max_mlp_ratio,
                  "ModelConfig: mlp_ratio must be a number in (0, ", max_mlp_ratio, "], got ",
                  mlp_ratio);
    Impl::require(static_cast<long long>(dim * mlp_ratio) >= 1, "ModelConfig: the MLP hidden "
                  "width int(dim * mlp_ratio) = int(", dim, " * ", mlp_ratio, ") must be at least 1");
    for (const auto& [what, rate] : {std::pair<const char*, double>{"drop_rate", drop_rate},
                                     {"drop_path_rate", drop_path_rate}})
      Impl::require(rate >= 0 && rate < 1, "ModelConfig: ", what,
                    " is a probability in [0, 1), got ", rate);
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

  // Names are tokens of the description and of checkpoint metadata: non-empty, unique, and
  // without commas, white space or control characters.
  void check_variables() const {
    Impl::require(variables.empty() || variables.size() == static_cast<std::size_t>(channels),
                  "ModelConfig: ", variables.size(), " variable names (",
                  Impl::join_names(variables), ") for channels = ", channels,
                  ", expected one per channel or none");
    auto check_name = [](const char* what, const std::string& name) {
      Impl::require(!name.empty(), "ModelConfig: an empty name among the ", what);
      for (const char ch : name)
        Impl::require(ch != ',' && static_cast<unsigned char>(ch) > ' ' && ch != 127,
                      "ModelConfig: ", what, " name '", name,
                      "' holds a comma, white space or a control character");
    };
    std::map<std::string, std::size_t> seen;
    for (std::size_t i = 0; i < variables.size(); ++i) {
      check_name("variables", variables[i]);
      const auto [at, added] = seen.emplace(variables[i], i);
      Impl::require(added, "ModelConfig: variable '", variables[i], "' is named twice (channels ",
                    at->second, " and ", i, ")");
    }
    Impl::require(out_variables.size() <= static_cast<std::size_t>(max_channels),
                  "ModelConfig: ", out_variables.size(), " output variables exceed the limit of ",
                  max_channels);
    const std::map<std::string, int> channel = channel_of_name();
    std::map<std::string, std::size_t> listed;
    for (std::size_t i = 0; i < out_variables.size(); ++i) {
      check_name("out_variables", out_variables[i]);
      Impl::require(listed.emplace(out_variables[i], i).second, "ModelConfig: output variable '",
                    out_variables[i], "' is listed twice");
      Impl::require(channel.count(out_variables[i]) == 1, "ModelConfig: output variable '",
                    out_variables[i], "' is not an input variable (",
                    Impl::join_names(variable_names()), ")");
    }
  }

  std::map<std::string, int> channel_of_name() const {
    std::map<std::string, int> channel;
    const std::vector<std::string> in = variable_names();
    for (std::size_t c = 0; c < in.size(); ++c) channel.emplace(in[c], static_cast<int>(c));
    return channel;
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
    s << "C=" << channels << " out=" << out_channels() << " image=" << height << "x" << width
      << " patch=" << patch << " L=" << patches() << " D=" << dim << " depth=" << depth
      << " heads=" << heads << " mlp_ratio=" << Impl::round_trip_text(mlp_ratio)
      << " decoder_depth=" << decoder_depth << " lead_time=" << (lead_time ? "yes" : "no")
      << " levels=" << levels_string();
    // Only when set, so that the description of a deterministic model reads as it always did.
    if (drop_rate != 0 || drop_path_rate != 0)
      s << " drop_rate=" << Impl::round_trip_text(drop_rate)
        << " drop_path_rate=" << Impl::round_trip_text(drop_path_rate);
    // Names likewise only when not the defaults; the defaults are implied by C, so the text
    // still identifies the definition (ranks compare it, checkpoints record it).
    if (!default_variables()) s << " variables=" << Impl::join_names(variables);
    if (!all_outputs()) s << " out_variables=" << Impl::join_names(out_variables);
    return s.str();
  }
};

// ClimaX's regularisation (its defaults drop_rate = 0.1, drop_path = 0.1) on a definition.
inline ModelConfig climax_dropout(ModelConfig c) {
  c.drop_rate = 0.1;
  c.drop_path_rate = 0.1;
  return c;
}

}  // namespace dchag

#endif
