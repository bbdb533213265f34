#ifndef DCHAG_TRAIN_CHECKPOINT_METADATA_HPP
#define DCHAG_TRAIN_CHECKPOINT_METADATA_HPP

// What a checkpoint says about itself: the "__metadata__" strings of its safetensors file
// (the format, the model's configuration field by field, the aggregator, the policy, the
// scalar, the step and the optimizer's settings; train/checkpoint.hpp lists them), written from
// a model and read back into a CheckpointInfo. Reading is strict (every integer is the whole
// string, every field a rebuilt model needs is present), so that a file of another model or a
// damaged header is refused with a message naming the field, before any tensor is read.

#include <climits>
#include <cstdint>
#include <cstdio>
#include <map>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <dchag/aggregation/cross_attention_aggregator.hpp>
#include <dchag/aggregation/linear_aggregator.hpp>
#include <dchag/core/error.hpp>
#include <dchag/io/safetensors_format.hpp>
#include <dchag/io/safetensors_reader.hpp>
#include <dchag/model/channel_vit.hpp>
#include <dchag/model/config.hpp>
#include <dchag/train/adamw.hpp>

namespace dchag {

// What a checkpoint says about itself (read_checkpoint_info), or what load_checkpoint loaded.
struct CheckpointInfo {
  ModelConfig config;            // as recorded; rebuilds the model
  std::string aggregator;        // "none", "linear" or "cross_attention"
  std::string scalar;            // "F32" or "F64"
  std::int64_t step = 0;         // the training step given to save_checkpoint
  bool has_optimizer = false;    // optimizer moments are in the file
  std::int64_t optimizer_steps = 0;
  std::map<std::string, std::string> metadata;
};

namespace Impl {

constexpr const char* checkpoint_format = "dchag.checkpoint";

inline std::string exact_number(double x) {
  char text[32];
  std::snprintf(text, sizeof text, "%.17g", x);
  return text;
}

// Strict integer from metadata text: the whole string, optional '-', digits.
inline bool parse_int64(const std::string& s, std::int64_t& out) {
  if (s.empty() || s.size() > 20) return false;
  std::size_t i = s[0] == '-' ? 1 : 0;
  if (i == s.size()) return false;
  long long v = 0;
  for (; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    if (v > (LLONG_MAX - (s[i] - '0')) / 10) return false;
    v = v * 10 + (s[i] - '0');
  }
  out = s[0] == '-' ? -v : v;
  return true;
}

inline std::string levels_text(const std::vector<int>& levels) {
  std::string s;
  for (std::size_t i = 0; i < levels.size(); ++i) s += (i ? "," : "") + std::to_string(levels[i]);
  return s;
}

// The fields of ModelConfig that define the parameters and the function (the seed does not:
// loaded weights replace the initialisation), as metadata text.
inline std::vector<std::pair<std::string, std::string>> config_fields(const ModelConfig& c) {
  return {{"channels", std::to_string(c.channels)},
          {"out_channels", std::to_string(c.out_channels)},
          {"height", std::to_string(c.height)},
          {"width", std::to_string(c.width)},
          {"patch", std::to_string(c.patch)},
          {"dim", std::to_string(c.dim)},
          {"depth", std::to_string(c.depth)},
          {"heads", std::to_string(c.heads)},
          {"mlp_ratio", std::to_string(c.mlp_ratio)},
          {"decoder_depth", std::to_string(c.decoder_depth)},
          {"levels", levels_text(c.levels)},
          {"lead_time", c.lead_time ? "true" : "false"}};
}

// "none" for the ClimaX baseline (no partial level), else the partial aggregator's kind.
template <class T, class ExecSpace, class Policy>
std::string aggregator_name(const ModelConfig& c) {
  if (c.levels.size() <= 1) return "none";
  using Partial = typename Policy::template partial<T, ExecSpace>;
  if (std::is_same<Partial, LinearAggregator<T, ExecSpace>>::value) return "linear";
  if (std::is_same<Partial, CrossAttentionAggregator<T, ExecSpace>>::value)
    return "cross_attention";
  return "custom";
}

inline const std::string& require_metadata(const std::map<std::string, std::string>& meta,
                                           const std::string& key, const std::string& label) {
  const auto it = meta.find(key);
  require(it != meta.end(), label, ": no '", key, "' in the metadata; not a dchag checkpoint "
          "(save_checkpoint and tests/python/climax_reference.py write it)");
  return it->second;
}

inline std::int64_t metadata_int(const std::map<std::string, std::string>& meta,
                                 const std::string& key, const std::string& label) {
  const std::string& text = require_metadata(meta, key, label);
  std::int64_t v = 0;
  require(parse_int64(text, v), label, ": metadata '", key, "' is '", text,
          "', not an integer");
  return v;
}

inline ModelConfig config_from_metadata(const std::map<std::string, std::string>& meta,
                                        const std::string& label) {
  auto get_int = [&](const char* field) {
    const std::int64_t v = metadata_int(meta, std::string("config.") + field, label);
    require(v >= INT_MIN && v <= INT_MAX, label, ": metadata 'config.", field, "' = ", v,
            " is out of range");
    return static_cast<int>(v);
  };
  ModelConfig c;
  c.channels = get_int("channels");
  c.out_channels = get_int("out_channels");
  c.height = get_int("height");
  c.width = get_int("width");
  c.patch = get_int("patch");
  c.dim = get_int("dim");
  c.depth = get_int("depth");
  c.heads = get_int("heads");
  c.mlp_ratio = get_int("mlp_ratio");
  c.decoder_depth = get_int("decoder_depth");
  const std::string& levels = require_metadata(meta, "config.levels", label);
  c.levels.clear();
  std::stringstream in(levels);
  std::string item;
  while (std::getline(in, item, ',')) {
    std::int64_t v = 0;
    require(parse_int64(item, v) && v > 0 && v <= INT_MAX, label, ": metadata 'config.levels' = '",
            levels, "' is not a list of positive integers");
    c.levels.push_back(static_cast<int>(v));
  }
  const std::string& lead = require_metadata(meta, "config.lead_time", label);
  require(lead == "true" || lead == "false", label, ": metadata 'config.lead_time' = '", lead,
          "', expected true or false");
  c.lead_time = lead == "true";
  const auto seed = meta.find("config.seed");
  if (seed != meta.end()) {
    std::int64_t v = 0;
    if (parse_int64(seed->second, v) && v >= 0) c.seed = static_cast<std::uint64_t>(v);
  }
  return c;
}

// Refuses a checkpoint of another model, listing every field that differs.
inline void check_checkpoint_config(const std::map<std::string, std::string>& meta,
                                    const std::string& label, const ModelConfig& model,
                                    const std::string& aggregator) {
  std::string differences;
  for (const auto& field : config_fields(model)) {
    const std::string& file = require_metadata(meta, "config." + field.first, label);
    if (file != field.second)
      differences += concat(differences.empty() ? "" : "; ", field.first, " = ", file,
                            " in the file, ", field.second, " in the model");
  }
  const auto agg = meta.find("aggregator");
  if (agg != meta.end() && agg->second != aggregator)
    differences += concat(differences.empty() ? "" : "; ", "aggregator = ", agg->second,
                          " in the file, ", aggregator, " in the model");
  require(differences.empty(), label, ": the checkpoint holds a different model configuration (",
          differences, ")");
}

template <class T, class ExecSpace, class Policy>
std::map<std::string, std::string> checkpoint_metadata(const ChannelViT<T, ExecSpace, Policy>& model,
                                                       const AdamW<T, ExecSpace>* optimizer,
                                                       std::int64_t step) {
  const ModelConfig& c = model.config();
  std::map<std::string, std::string> meta;
  meta["format"] = checkpoint_format;
  meta["format_version"] = "1";
  meta["config"] = c.describe();
  for (const auto& f : config_fields(c)) meta["config." + f.first] = f.second;
  meta["config.seed"] = std::to_string(c.seed);
  meta["aggregator"] = aggregator_name<T, ExecSpace, Policy>(c);
  meta["policy"] = Policy::name();
  meta["scalar"] = safetensors_dtype_of<T>();
  meta["step"] = std::to_string(step);
  if (optimizer) {
    const AdamWConfig& a = optimizer->config();
    meta["optimizer"] = "AdamW";
    meta["optimizer.step_count"] = std::to_string(optimizer->step_count());
    meta["optimizer.lr"] = exact_number(a.lr);
    meta["optimizer.beta1"] = exact_number(a.beta1);
    meta["optimizer.beta2"] = exact_number(a.beta2);
    meta["optimizer.eps"] = exact_number(a.eps);
    meta["optimizer.weight_decay"] = exact_number(a.weight_decay);
  }
  return meta;
}
inline CheckpointInfo checkpoint_info(const SafetensorsFile& file) {
  const auto& meta = file.metadata();
  const std::string& label = file.label();
  const std::string& format = require_metadata(meta, "format", label);
  require(format == checkpoint_format, label, ": metadata 'format' is '", format, "', not '",
          checkpoint_format, "'");
  CheckpointInfo info;
  info.config = config_from_metadata(meta, label);
  try {
    info.config.validate();
  } catch (const Error& e) {
    throw Error(concat(label, ": the configuration it records is not a valid model: ", e.what()));
  }
  const auto agg = meta.find("aggregator");
  info.aggregator = agg != meta.end() ? agg->second : "none";
  const auto scalar = meta.find("scalar");
  info.scalar = scalar != meta.end() ? scalar->second : "";
  info.step = meta.count("step") ? metadata_int(meta, "step", label) : 0;
  info.has_optimizer = meta.count("optimizer.step_count") != 0;
  if (info.has_optimizer) info.optimizer_steps = metadata_int(meta, "optimizer.step_count", label);
  info.metadata = meta;
  return info;
}
}  // namespace Impl

// What the checkpoint at `path` holds, from its header (not collective; reads no tensor data).
inline CheckpointInfo read_checkpoint_info(const std::string& path) {
  return Impl::checkpoint_info(SafetensorsFile::read(path));
}

}  // namespace dchag

#endif
