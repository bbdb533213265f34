#ifndef DCHAG_TRAIN_CHECKPOINT_METADATA_HPP
#define DCHAG_TRAIN_CHECKPOINT_METADATA_HPP

// What a checkpoint says about itself: the "__metadata__" strings of its safetensors file
// (the format, the kind of model, its configuration field by field, the aggregator, the policy,
// the scalar, the step and the optimizer's settings; train/checkpoint.hpp lists them), written from
// a model and read back into a CheckpointInfo. Reading is strict (every integer is the whole
// string, every field a rebuilt model needs is present), so that a file of another model or a
// damaged header is refused with a message naming the field, before any tensor is read.

#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <dchag/aggregation/aggregator.hpp>
#include <dchag/core/error.hpp>
#include <dchag/io/safetensors_format.hpp>
#include <dchag/io/safetensors_reader.hpp>
#include <dchag/model/channel_vit.hpp>
#include <dchag/model/config.hpp>
#include <dchag/model/mae.hpp>
#include <dchag/train/adamw.hpp>
#include <dchag/train/checkpoint_model.hpp>

namespace dchag {

// What a checkpoint says about itself (read_checkpoint_info), or what load_checkpoint loaded.
struct CheckpointInfo {
  std::string model;             // the kind: "channel_vit" (ChannelViT) or "channel_mae"
  ModelConfig config;            // as recorded; rebuilds the model
  MaeConfig mae;                 // as recorded, when model is "channel_mae"
  std::string aggregator;        // "none", or the partial aggregator's name(): "linear", ...
  std::string scalar;            // "F32", "F64", "BF16" or "F16": the model's precision
  std::int64_t step = 0;         // the training step given to save_checkpoint
  bool has_optimizer = false;    // optimizer moments are in the file
  std::int64_t optimizer_steps = 0;
  std::map<std::string, std::string> metadata;
};

namespace Impl {

constexpr const char* checkpoint_format = "dchag.checkpoint";
// The kind of model of a file without "model" (those of earlier versions and of the PyTorch
// reference, which are all ChannelViTs).
constexpr const char* checkpoint_default_kind = "channel_vit";

// A metadata entry of a model's definition beyond ModelConfig. `checked` ones must match the
// model's on loading (they define the parameters or the function); the others (how it was
// initialised) are recorded to rebuild it.
struct MetadataField {
  std::string key, value;
  bool checked;
};

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
          {"out_channels", std::to_string(c.out_channels())},
          {"height", std::to_string(c.height)},
          {"width", std::to_string(c.width)},
          {"patch", std::to_string(c.patch)},
          {"dim", std::to_string(c.dim)},
          {"depth", std::to_string(c.depth)},
          {"heads", std::to_string(c.heads)},
          {"mlp_ratio", round_trip_text(c.mlp_ratio)},
          {"decoder_depth", std::to_string(c.decoder_depth)},
          {"levels", levels_text(c.levels)},
          {"lead_time", c.lead_time ? "true" : "false"},
          {"variables", join_names(c.variable_names())},
          {"out_variables", join_names(c.output_variable_names())}};
}

// What a file written before variables were named means by the name lists it lacks: the
// default names, all of them predicted. Only a file whose head predicted every channel has
// that meaning; config_from_metadata refuses the others.
inline std::string legacy_names(const std::map<std::string, std::string>& meta,
                                const std::string& key, int channels) {
  const auto vars = meta.find("config.variables");
  if (key == "config.out_variables" && vars != meta.end()) return vars->second;
  return join_names(default_variable_names(channels));
}

// "none" for the ClimaX baseline (no partial level), else the partial aggregator's name()
// (aggregation/aggregator.hpp), so a user's aggregator is recorded and checked like ours.
template <class T, class ExecSpace, class Policy>
std::string aggregator_name(const ModelConfig& c) {
  if (c.levels.size() <= 1) return "none";
  return Policy::template partial<T, ExecSpace>::name();
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

// A finite number from metadata text: the whole string ("4", "2.5", "1e-3").
inline bool parse_number(const std::string& s, double& out) {
  if (s.empty() || s.find_first_of(" \t\n") != std::string::npos) return false;
  char* end = nullptr;
  out = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size() && std::isfinite(out);
}

// Metadata values that mean the same number ("4" written by an older version for the integer
// mlp_ratio, "4.0" by Python) are the same value.
inline bool same_metadata_value(const std::string& a, const std::string& b) {
  if (a == b) return true;
  double x = 0, y = 0;
  return parse_number(a, x) && parse_number(b, y) && x == y;
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
  const int out_channels = get_int("out_channels");
  c.height = get_int("height");
  c.width = get_int("width");
  c.patch = get_int("patch");
  c.dim = get_int("dim");
  c.depth = get_int("depth");
  c.heads = get_int("heads");
  // A number: older checkpoints wrote an integer ("4"), which reads as one too.
  const std::string& ratio = require_metadata(meta, "config.mlp_ratio", label);
  require(parse_number(ratio, c.mlp_ratio), label, ": metadata 'config.mlp_ratio' is '", ratio,
          "', not a number");
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
  // Regularisation of the run that wrote the file (absent before it existed: none).
  for (const auto& [key, rate] : {std::pair<const char*, double*>{"config.drop_rate", &c.drop_rate},
                                  {"config.drop_path_rate", &c.drop_path_rate}}) {
    const auto it = meta.find(key);
    if (it == meta.end()) continue;
    require(parse_number(it->second, *rate), label, ": metadata '", key, "' is '", it->second,
            "', not a number");
  }
  // The variables' names (absent in files written before they were named: the defaults, every
  // one predicted, which is what such a file's head did when out_channels = channels).
  const auto vars = meta.find("config.variables");
  if (vars != meta.end()) c.variables = split_names(vars->second);
  const auto outs = meta.find("config.out_variables");
  if (outs != meta.end()) {
    c.out_variables = split_names(outs->second);
  } else {
    require(out_channels == c.channels, label, ": metadata 'config.out_channels' = ",
            out_channels, " with channels = ", c.channels, " and no 'config.out_variables': a "
            "file of a version whose head predicted only the first out_channels variables, "
            "which this model's head (every variable, as ClimaX) cannot load");
  }
  // Stored as the defaults they are, so that the configuration reads as one never named.
  // (Only for a channel count within the limits: validate() refuses the others.)
  if (c.channels > 0 && c.channels <= ModelConfig::max_channels) {
    if (c.variables.size() == static_cast<std::size_t>(c.channels) && c.default_variables())
      c.variables.clear();
    if (c.variables.size() <= static_cast<std::size_t>(c.channels) && c.all_outputs())
      c.out_variables.clear();
  }
  require(out_channels == c.out_channels(), label, ": metadata 'config.out_channels' = ",
          out_channels, " but 'config.out_variables' names ", c.out_channels(), " variables");
  const auto seed = meta.find("config.seed");
  if (seed != meta.end()) {
    std::int64_t v = 0;
    if (parse_int64(seed->second, v) && v >= 0) c.seed = static_cast<std::uint64_t>(v);
  }
  return c;
}

// The masked autoencoder's own definition: "mae" = MaeConfig::describe() and its fields under
// "mae.*" (the decoder's shape and the mask ratio are checked; the initialisation is recorded).
inline std::vector<MetadataField> mae_fields(const MaeConfig& m) {
  return {{"mae", m.describe(), false},
          {"mae.mask_ratio", exact_number(m.mask_ratio), true},
          {"mae.decoder_dim", std::to_string(m.decoder_dim), true},
          {"mae.decoder_depth", std::to_string(m.decoder_depth), true},
          {"mae.decoder_heads", std::to_string(m.decoder_heads), true},
          {"mae.decoder_mlp_ratio", round_trip_text(m.decoder_mlp_ratio), true},
          {"mae.init", m.xavier_init ? "xavier" : "climax", false}};
}

// The fields a model adds to its ModelConfig: none, unless it is a masked autoencoder.
template <class Model>
std::vector<MetadataField> model_fields(const Model&) {
  return {};
}
template <class T, class ExecSpace, class Policy>
std::vector<MetadataField> model_fields(const ChannelMAE<T, ExecSpace, Policy>& model) {
  return mae_fields(model.mae_config());
}

inline MaeConfig mae_from_metadata(const std::map<std::string, std::string>& meta,
                                   const std::string& label) {
  auto get_int = [&](const char* field) {
    const std::int64_t v = metadata_int(meta, std::string("mae.") + field, label);
    require(v >= INT_MIN && v <= INT_MAX, label, ": metadata 'mae.", field, "' = ", v,
            " is out of range");
    return static_cast<int>(v);
  };
  MaeConfig m;
  const std::string& ratio = require_metadata(meta, "mae.mask_ratio", label);
  char* end = nullptr;
  m.mask_ratio = std::strtod(ratio.c_str(), &end);
  require(!ratio.empty() && end == ratio.c_str() + ratio.size(), label,
          ": metadata 'mae.mask_ratio' is '", ratio, "', not a number");
  m.decoder_dim = get_int("decoder_dim");
  m.decoder_depth = get_int("decoder_depth");
  m.decoder_heads = get_int("decoder_heads");
  // A number: older checkpoints wrote an integer ("4"), which reads as one too.
  const std::string& mlp = require_metadata(meta, "mae.decoder_mlp_ratio", label);
  require(parse_number(mlp, m.decoder_mlp_ratio), label,
          ": metadata 'mae.decoder_mlp_ratio' is '", mlp, "', not a number");
  const auto init = meta.find("mae.init");
  if (init != meta.end()) m.xavier_init = init->second != "climax";
  return m;
}

inline std::string checkpoint_kind(const std::map<std::string, std::string>& meta) {
  const auto it = meta.find("model");
  return it != meta.end() ? it->second : checkpoint_default_kind;
}

// Refuses a checkpoint of another kind of model, or of another model, listing every field that
// differs.
inline void check_checkpoint_config(const std::map<std::string, std::string>& meta,
                                    const std::string& label, const std::string& kind,
                                    const ModelConfig& model,
                                    const std::vector<MetadataField>& fields,
                                    const std::string& aggregator,
                                    bool any_aggregation = false) {
  const std::string file_kind = checkpoint_kind(meta);
  require(file_kind == kind, label, ": the checkpoint holds a ", file_kind, " model, which cannot "
          "be loaded into a ", kind, " (a ChannelViT is a channel_vit, a ChannelMAE a "
          "channel_mae)");
  std::string differences;
  for (const auto& field : config_fields(model)) {
    // (init_from_checkpoint: the file may aggregate the channels otherwise)
    if (any_aggregation && field.first == "levels") continue;
    const std::string key = "config." + field.first;
    const bool named = field.first == "variables" || field.first == "out_variables";
    const std::string file = named && meta.count(key) == 0
                                 ? legacy_names(meta, key, model.channels)
                                 : require_metadata(meta, key, label);
    if (!same_metadata_value(file, field.second))
      differences += concat(differences.empty() ? "" : "; ", field.first, " = ", file,
                            " in the file, ", field.second, " in the model");
  }
  for (const auto& field : fields) {
    if (!field.checked) continue;
    const std::string& file = require_metadata(meta, field.key, label);
    if (!same_metadata_value(file, field.value))
      differences += concat(differences.empty() ? "" : "; ", field.key, " = ", file,
                            " in the file, ", field.value, " in the model");
  }
  const auto agg = meta.find("aggregator");
  if (!any_aggregation && agg != meta.end() && agg->second != aggregator)
    differences += concat(differences.empty() ? "" : "; ", "aggregator = ", agg->second,
                          " in the file, ", aggregator, " in the model");
  require(differences.empty(), label, ": the checkpoint holds a different model configuration (",
          differences, ")");
}

template <class Model>
std::map<std::string, std::string> checkpoint_metadata(
    const Model& model, const checkpoint_optimizer_t<Model>* optimizer, std::int64_t step) {
  using T = typename Model::scalar;
  using ExecSpace = typename Model::execution_space;
  using Policy = typename Model::policy;
  const ModelConfig& c = model.config();
  std::map<std::string, std::string> meta;
  meta["format"] = checkpoint_format;
  meta["format_version"] = "1";
  meta["model"] = Model::kind();
  const std::vector<MetadataField> fields = model_fields(model);
  for (const auto& f : fields) meta[f.key] = f.value;
  meta["config"] = c.describe();
  for (const auto& f : config_fields(c)) meta["config." + f.first] = f.second;
  meta["config.seed"] = std::to_string(c.seed);
  // Not checked on loading: they shape training, not the parameters or the evaluated function.
  meta["config.drop_rate"] = round_trip_text(c.drop_rate);
  meta["config.drop_path_rate"] = round_trip_text(c.drop_path_rate);
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
    if constexpr (LossScaler<T>::enabled) {
      meta["optimizer.loss_scale"] = exact_number(optimizer->loss_scaler().scale());
      meta["optimizer.loss_scale_growth_tracker"] =
          std::to_string(optimizer->loss_scaler().growth_tracker());
    }
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
  info.model = checkpoint_kind(meta);
  info.config = config_from_metadata(meta, label);
  try {
    info.config.validate();
  } catch (const Error& e) {
    throw Error(concat(label, ": the configuration it records is not a valid model: ", e.what()));
  }
  if (info.model == "channel_mae") {
    info.mae = mae_from_metadata(meta, label);
    try {
      info.mae.validate(info.config);
    } catch (const Error& e) {
      throw Error(concat(label, ": the masked autoencoder it records is not valid: ", e.what()));
    }
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
