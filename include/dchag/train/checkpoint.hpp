#ifndef DCHAG_TRAIN_CHECKPOINT_HPP
#define DCHAG_TRAIN_CHECKPOINT_HPP

// Checkpoints of a model (a ChannelViT, a ChannelMAE, or any model with what
// train/checkpoint_model.hpp lists) and of its AdamW state that do not depend on the grid they
// were written on, and that PyTorch reads as a plain state_dict.
//
// The file. One safetensors file (io/safetensors.hpp) holding every parameter under its ClimaX
// name in its LOGICAL (un-sharded) shape, F32 for a float model and F64 for a double one, in
// "natural" name order (blocks.2 before blocks.10), so that the same model gives the same bytes
// whatever grid wrote it; BF16 / F16 for a bf16 / fp16 model (its raw bits). With an optimizer,
// its moments are in the same file as "optimizer.m.{name}" and "optimizer.v.{name}" (logical
// shapes too, in the optimizer's master_t: F32 for a 16-bit model, whose fp32 master weights
// are there as well, "optimizer.master.{name}", so that a 16-bit run resumes exactly, the
// update of the next step starting from the same float weights): one file means one atomic
// rename, so a checkpoint can never pair weights with the moments of another step. A PyTorch
// user drops the "optimizer." entries before load_state_dict (tests/python/climax_reference.py
// does). __metadata__ holds (all strings):
//   format = "dchag.checkpoint", format_version = "1"
//   model = the model's kind(): "channel_vit" | "channel_mae" (absent: channel_vit); loading
//            refuses a file of another kind
//   for a ChannelMAE: mae = MaeConfig::describe(), and mae.{mask_ratio, decoder_dim,
//            decoder_depth, decoder_heads, decoder_mlp_ratio} (checked on loading), mae.init
//   config = ModelConfig::describe(), and config.{channels, out_channels, height, width, patch,
//            dim, depth, heads, mlp_ratio (a number; older files hold an integer), decoder_depth,
//            levels ("4,1"), lead_time ("true" / "false"), variables and out_variables (names,
//            "z500,t850"; absent in older files: the defaults, all predicted), seed, drop_rate,
//            drop_path_rate}: enough to rebuild the model (read_checkpoint_info); drop_rate and
//            drop_path_rate (training only, absent in older files: 0) are not checked on loading
//   aggregator = "none" (levels {1}, the ClimaX baseline) | the partial aggregator's name()
//                ("linear", "cross_attention" or a user's)
//   policy = Policy::name() of the writer (information only: any policy may load the file)
//   scalar = "F32" | "F64" | "BF16" | "F16", the model's precision: loading the model alone
//            converts (rounding to nearest even into a narrower type); loading an optimizer
//            refuses a file of a 16-bit model into a float or double one and vice versa (their
//            optimizer states differ: master weights or none), naming both precisions
//   step = the training step given to save_checkpoint
//   with an optimizer: optimizer = "AdamW", optimizer.step_count, and its lr, beta1, beta2, eps
//            and weight_decay (information only: the run's optimizer settings are its own);
//            for an fp16 model the loss scaler's state, optimizer.loss_scale and
//            optimizer.loss_scale_growth_tracker (restored on loading; absent in older files:
//            the scaler keeps its state)
// and, as in every file SafetensorsWriter writes, a checksum of each tensor's bytes, which
// loading verifies. Values that are NaN or infinite are refused both ways (NonFinite).
//
// Saving (collective over the model's world). Only the first data-parallel replica is written
// (replicas are identical): each of its ranks contributes the pieces of the partitioned
// parameters it holds, and tp rank 0 the replicated ones. World rank 0 gathers the layout,
// checks that the pieces tile every logical tensor exactly once, writes the header, then
// receives the tensors one at a time in file order (point to point, so no rank ever holds more
// than one logical tensor beyond its own model) and streams them into a temporary file that is
// renamed into place once complete.
//
// Loading (collective over the model's world; any grid, any policy with the same parameter
// names). Every rank reads the file itself and keeps only its own pieces. Everything is checked
// before the model is touched: the configuration in the metadata against the model's (seed
// excepted: the weights replace the initialisation), every tensor present with its logical
// shape, no tensor the model lacks, the optimizer's moments and step count when an optimizer is
// given. The ranks then agree (an all-reduce of who failed, a broadcast of the first failure's
// message), so that a failure anywhere throws the same dchag::Error on every rank, naming the
// file and the tensor, and leaves the model and the optimizer as they were.
//
// The parts: train/checkpoint_model.hpp (what a model needs to be checkpointed),
// train/checkpoint_metadata.hpp (the metadata, config <-> text, CheckpointInfo,
// read_checkpoint_info), train/checkpoint_plan.hpp (which pieces each rank writes and reads);
// this header holds the collective save and load protocol and includes them.

#include <mpi.h>

#include <Kokkos_Core.hpp>
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <dchag/core/error.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/scalar_traits.hpp>
#include <dchag/core/view.hpp>
#include <dchag/io/safetensors.hpp>
#include <dchag/kernels/reductions.hpp>
#include <dchag/model/channel_vit.hpp>
#include <dchag/parallel/agreement.hpp>
#include <dchag/parallel/collectives.hpp>
#include <dchag/parallel/communicator.hpp>
#include <dchag/parallel/process_grid.hpp>
#include <dchag/train/adamw.hpp>
#include <dchag/train/checkpoint_metadata.hpp>
#include <dchag/train/checkpoint_model.hpp>
#include <dchag/train/checkpoint_plan.hpp>

namespace dchag {

// Whether save_checkpoint and load_checkpoint accept weights or optimizer moments that are NaN
// or infinite. By default they refuse: a diverged last step must not replace a good checkpoint,
// and a file holding such values must not silently poison a run. Allow is for inspecting a
// diverged run on purpose.
enum class NonFinite { Refuse, Allow };

namespace Impl {

constexpr int checkpoint_tag = 0x5afe;

// A contiguous rank-1 view's values on the host, and back (synchronous: deep_copy fences).
template <class View>
std::vector<typename View::non_const_value_type> to_host_vector(const View& v) {
  using T = typename View::non_const_value_type;
  std::vector<T> out(v.size());
  Kokkos::deep_copy(Kokkos::View<T*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(
                        out.data(), out.size()),
                    v);
  return out;
}

template <class View, class T>
void from_host_vector(const View& v, const std::vector<T>& host) {
  Kokkos::deep_copy(v, Kokkos::View<const T*, Kokkos::HostSpace,
                                    Kokkos::MemoryTraits<Kokkos::Unmanaged>>(host.data(),
                                                                             host.size()));
}

// Every rank's text at root (collective; the result is empty elsewhere).
inline std::vector<std::string> gather_strings(const Communicator& comm, const std::string& mine,
                                               int root) {
  const char* where = "save_checkpoint";
  const int p = comm.size();
  const bool is_root = comm.rank() == root;
  long long length = static_cast<long long>(mine.size()), total = 0;
  check_mpi(MPI_Allreduce(&length, &total, 1, MPI_LONG_LONG, MPI_SUM, comm.get()),
            "MPI_Allreduce", where);
  require(total <= INT_MAX, "dchag::save_checkpoint: the layout descriptions (", total,
          " bytes) are too large to gather");
  const int n = static_cast<int>(length);
  std::vector<int> lengths(is_root ? p : 0), offsets(is_root ? p : 0);
  check_mpi(MPI_Gather(&n, 1, MPI_INT, lengths.data(), 1, MPI_INT, root, comm.get()),
            "MPI_Gather", where);
  int sum = 0;
  for (int r = 0; r < static_cast<int>(lengths.size()); ++r) {
    offsets[r] = sum;
    sum += lengths[r];
  }
  std::vector<char> all(static_cast<std::size_t>(sum) + 1);
  check_mpi(MPI_Gatherv(mine.data(), n, MPI_CHAR, all.data(), lengths.data(), offsets.data(),
                        MPI_CHAR, root, comm.get()),
            "MPI_Gatherv", where);
  std::vector<std::string> out;
  for (int r = 0; r < static_cast<int>(lengths.size()); ++r)
    out.emplace_back(all.data() + offsets[r], static_cast<std::size_t>(lengths[r]));
  return out;
}

template <class T>
void require_finite(const std::vector<T>& values, const std::string& name,
                    const std::string& label) {
  for (std::size_t i = 0; i < values.size(); ++i)
    require(std::isfinite(static_cast<double>(values[i])), label, ": tensor '", name, "' holds a value that is not "
            "finite (", values[i], " at element ", i, " of this rank's part): the run that wrote "
            "it had diverged; refusing to load it (pass NonFinite::Allow to load it anyway)");
}

// A piece's values on the host, in the optimizer's master_t<T> (what travels to rank 0: exact
// for a 16-bit parameter, which float holds exactly, and T itself for float and double).
template <class T, class ExecSpace>
std::vector<master_t<T>> piece_to_host(const CheckpointPiece<T, ExecSpace>& p) {
  if (p.optimizer) return to_host_vector(p.state);
  if constexpr (std::is_same<master_t<T>, T>::value) {
    return to_host_vector(p.values);
  } else {
    const std::vector<T> narrow = to_host_vector(p.values);
    return std::vector<master_t<T>>(narrow.begin(), narrow.end());
  }
}

template <class T, class ExecSpace>
bool piece_finite(const CheckpointPiece<T, ExecSpace>& p) {
  return p.optimizer ? all_finite(ExecSpace(), p.state) : all_finite(ExecSpace(), p.values);
}

// A file of a 16-bit model into a float or double optimizer, or the other way: refused (see the
// top of the file).
template <class T>
void require_optimizer_precision(const CheckpointInfo& info, const std::string& label) {
  const std::string mine = safetensors_dtype_of<T>();
  const bool file_low = info.scalar == "BF16" || info.scalar == "F16";
  require(info.scalar.empty() || file_low == is_low_precision_v<T>, label,
          ": the checkpoint's optimizer state is of a ", info.scalar, " model, the optimizer "
          "given is of a ", mine, " model; a 16-bit model's optimizer keeps fp32 master weights "
          "and a float or double model's does not, so one cannot resume the other (load the "
          "model alone, without an optimizer, to convert its weights)");
}

inline std::string what_failed(const std::exception& e, const std::string& path) {
  // dchag::Error messages name the file already; anything else (bad_alloc, ...) gets it here.
  if (dynamic_cast<const Error*>(&e)) return e.what();
  return concat("checkpoint '", path, "': ", e.what());
}

}  // namespace Impl

// Writes `model` (and the moments and step count of `optimizer`, unless null) to `path` as one
// logical safetensors file, with `step` in the metadata. Collective over the model's world;
// throws the same dchag::Error on every rank on failure (the target file is then untouched),
// also when a value to write is NaN or infinite, unless `nonfinite` is NonFinite::Allow.
template <class Model>
void save_checkpoint(const std::string& path, const Model& model,
                     const Impl::checkpoint_optimizer_t<Model>* optimizer, std::int64_t step,
                     NonFinite nonfinite = NonFinite::Refuse) {
  static_assert(Impl::require_checkpointable<Model>());
  using T = typename Model::scalar;
  using ExecSpace = typename Model::execution_space;
  using Piece = Impl::CheckpointPiece<T, ExecSpace>;
  const ProcessGrid& grid = model.grid();
  const Communicator& world = grid.world();
  const bool root = world.rank() == 0;
  const std::string label = "checkpoint '" + path + "'";

  std::vector<Piece> pieces;
  std::string error;
  try {
    Impl::require(step >= 0, "dchag::save_checkpoint: ", label, ": step ", step,
                  " must be >= 0");
    pieces = Impl::checkpoint_pieces(model.parameters(), optimizer, grid, label);
    if (nonfinite == NonFinite::Refuse)
      for (const auto& p : pieces)
        Impl::require(Impl::piece_finite(p), "dchag::save_checkpoint: ", label, ": '",
                      p.name, "' holds NaN or infinite values (the training diverged); nothing "
                      "was written, and a file already there keeps its content (pass "
                      "NonFinite::Allow to write such values anyway)");
  } catch (const std::exception& e) {
    error = Impl::what_failed(e, path);
  }
  Impl::agree_on_success(world, error);

  // Rank 0 learns the layout, checks it and starts the file (header first).
  const std::vector<std::string> layouts =
      Impl::gather_strings(world, Impl::describe_pieces(pieces), 0);
  std::vector<Impl::PlannedTensor> plan;
  std::optional<SafetensorsWriter> writer;
  if (root) {
    try {
      plan = Impl::plan_checkpoint(layouts, label);
      std::vector<SafetensorsEntry> entries;
      for (const auto& t : plan)
        entries.push_back({t.name,
                           Impl::starts_with(t.name, "optimizer.")
                               ? Impl::safetensors_dtype_of<master_t<T>>()
                               : Impl::safetensors_dtype_of<T>(),
                           t.shape});
      writer.emplace(path, std::move(entries),
                     Impl::checkpoint_metadata(model, optimizer, step));
    } catch (const std::exception& e) {
      error = Impl::what_failed(e, path);
    }
  }
  Impl::agree_on_success(world, error);

  // The tensors, one at a time in file order. Each rank sends its pieces in that same order,
  // so rank 0's next expected message from a rank is always the one that rank sends next.
  // Nothing may stop the exchange half way, or a rank would wait forever: a rank that cannot
  // stage a piece sends an empty message instead (rank 0 sees the short count), and rank 0
  // keeps receiving after a failure of its own, writing nothing more.
  // Every piece travels as master_t<T> (T for float and double; float for a 16-bit model, whose
  // parameters widen exactly and narrow back to the same bits in the writer).
  using W = master_t<T>;
  const MPI_Datatype type = Impl::MpiType<W>::get();
  if (!root) {
    for (const auto& p : pieces) {
      std::vector<W> host;
      if (error.empty()) {
        try {
          host = Impl::piece_to_host(p);
        } catch (const std::exception& e) {
          error = Impl::what_failed(e, path);
        }
      }
      Impl::check_mpi(MPI_Send(host.data(), static_cast<int>(host.size()), type, 0,
                               Impl::checkpoint_tag, world.get()),
                      "MPI_Send", "save_checkpoint");
    }
  } else {
    std::map<std::string, const Piece*> own;
    for (const auto& p : pieces) own[p.name] = &p;
    auto fail = [&](const std::string& what) {
      if (error.empty()) error = what;
      writer.reset();  // removes the temporary file
    };
    for (const auto& t : plan) {
      std::size_t n = 1;
      for (auto d : t.shape) n *= d;
      std::vector<W> full, part;
      try {
        if (writer) full.resize(n);
      } catch (const std::exception& e) {
        fail(Impl::what_failed(e, path));
      }
      for (const auto& s : t.sources) {
        bool complete = true;
        try {
          if (s.rank == 0) {
            part = Impl::piece_to_host(*own.at(t.name));
          } else {
            part.resize(s.count);
            MPI_Status status;
            Impl::check_mpi(MPI_Recv(part.data(), static_cast<int>(s.count), type, s.rank,
                                     Impl::checkpoint_tag, world.get(), &status),
                            "MPI_Recv", "save_checkpoint");
            int received = 0;
            Impl::check_mpi(MPI_Get_count(&status, type, &received), "MPI_Get_count",
                            "save_checkpoint");
            complete = received == static_cast<int>(s.count);
          }
        } catch (const Error&) {
          throw;  // MPI itself failed: nothing sensible is left to do
        } catch (const std::exception& e) {
          fail(Impl::what_failed(e, path));
          continue;
        }
        if (!complete) {
          fail(Impl::concat(label, ": rank ", s.rank, " could not send its part of tensor '",
                            t.name, "'"));
          continue;
        }
        if (!writer) continue;
        std::size_t at = 0;
        for (const auto& b : s.boxes)
          Impl::for_each_box_run(t.shape, b, [&](std::size_t offset, std::size_t run) {
            std::copy(part.begin() + at, part.begin() + at + run, full.begin() + offset);
            at += run;
          });
      }
      if (!writer) continue;
      try {
        writer->write(t.name, full.data(), n);
      } catch (const std::exception& e) {
        fail(Impl::what_failed(e, path));
      }
    }
  }
  // A sender's failure first: its own message says what went wrong, where rank 0 only saw a
  // short message. The file is renamed into place only when every rank delivered.
  Impl::agree_on_success(world, root ? std::string() : error);
  if (root && writer) {
    try {
      writer->commit();
    } catch (const std::exception& e) {
      error = Impl::what_failed(e, path);
    }
  }
  writer.reset();
  Impl::agree_on_success(world, root ? error : std::string());
}

// The model alone.
template <class Model>
void save_checkpoint(const std::string& path, const Model& model, std::int64_t step = 0,
                     NonFinite nonfinite = NonFinite::Refuse) {
  save_checkpoint(path, model, static_cast<const Impl::checkpoint_optimizer_t<Model>*>(nullptr),
                  step, nonfinite);
}

namespace Impl {

// load_checkpoint, and with `init_only` init_from_checkpoint: the file's aggregation (levels,
// aggregator) may differ, and the partial aggregators it lacks keep their values.
template <class Model>
CheckpointInfo load_model_state(const std::string& path, Model& model,
                                checkpoint_optimizer_t<Model>* optimizer, NonFinite nonfinite,
                                bool init_only) {
  static_assert(Impl::require_checkpointable<Model>());
  using T = typename Model::scalar;
  using ExecSpace = typename Model::execution_space;
  using Policy = typename Model::policy;
  const Communicator& world = model.grid().world();
  using W = master_t<T>;
  constexpr bool has_master = AdamW<T, ExecSpace>::has_master;
  const ParameterList<T, ExecSpace> params = model.parameters();
  std::vector<std::vector<T>> values(params.size());
  std::vector<std::vector<W>> ms, vs, masters;
  std::optional<std::pair<double, std::int64_t>> loss_scale;  // fp16: scale, growth tracker
  std::vector<char> kept(params.size(), 0);  // init_only: partial aggregators the file lacks
  std::vector<std::string> file_names;  // the file's model tensors, sorted
  std::vector<std::string> extra;       // names no rank can own (optimizer entries)
  CheckpointInfo info;
  std::string error;
  std::string label = "checkpoint '" + path + "'";
  try {
    const SafetensorsFile file = SafetensorsFile::read(path);
    label = file.label();
    info = Impl::checkpoint_info(file);
    Impl::check_checkpoint_config(file.metadata(), label, Model::kind(), model.config(),
                                  Impl::model_fields(model),
                                  Impl::aggregator_name<T, ExecSpace, Policy>(model.config()),
                                  init_only);
    for (std::size_t i = 0; i < params.size(); ++i) {
      const auto& p = params[i];
      kept[i] = init_only && Impl::starts_with(p.name, "agg.") && !file.contains(p.name);
      if (kept[i]) continue;
      values[i] = Impl::read_pieces<T>(file, p.name, p.shape, p.pieces, p.size(), "parameter");
      if (nonfinite == NonFinite::Refuse) Impl::require_finite(values[i], p.name, label);
    }
    if (optimizer) {
      Impl::require(info.has_optimizer, label, ": the checkpoint holds no optimizer state "
                    "(it was saved without an optimizer); load without one");
      Impl::require(info.optimizer_steps >= 0, label, ": optimizer.step_count = ",
                    info.optimizer_steps, " is negative");
      Impl::require_optimizer_precision<T>(info, label);
      if constexpr (LossScaler<T>::enabled) {
        if (info.metadata.count("optimizer.loss_scale")) {
          const std::string& text = info.metadata.at("optimizer.loss_scale");
          double scale = 0;
          Impl::require(Impl::parse_number(text, scale) && scale > 0, label,
                        ": metadata 'optimizer.loss_scale' is '", text,
                        "', expected a finite number > 0");
          const std::int64_t tracker =
              Impl::metadata_int(info.metadata, "optimizer.loss_scale_growth_tracker", label);
          const std::int64_t interval = optimizer->loss_scaler().config().growth_interval;
          Impl::require(tracker >= 0 && tracker < interval, label,
                        ": metadata 'optimizer.loss_scale_growth_tracker' = ", tracker,
                        ", expected a value in [0, ", interval, ") (the scaler's growth interval)");
          loss_scale = {scale, tracker};
        }
      }
      if (optimizer->has_state()) {
        Impl::require(optimizer->state_names().size() == params.size(), label,
                      ": the optimizer given holds state for ", optimizer->state_names().size(),
                      " parameters but the model has ", params.size());
        for (const auto& p : params)
          Impl::require(optimizer->state(p.name).m.size() == p.size(), label,
                        ": the optimizer given holds state of another size for '", p.name, "'");
      }
      ms.resize(params.size());
      vs.resize(params.size());
      if (has_master) masters.resize(params.size());
      for (std::size_t i = 0; i < params.size(); ++i) {
        const auto& p = params[i];
        ms[i] = Impl::read_pieces<W>(file, Impl::checkpoint_m_prefix + p.name, p.shape, p.pieces,
                                     p.size(), "optimizer moment");
        vs[i] = Impl::read_pieces<W>(file, Impl::checkpoint_v_prefix + p.name, p.shape, p.pieces,
                                     p.size(), "optimizer moment");
        if (has_master)
          masters[i] = Impl::read_pieces<W>(file, Impl::checkpoint_master_prefix + p.name,
                                            p.shape, p.pieces, p.size(), "master weight");
        if (nonfinite == NonFinite::Refuse) {
          Impl::require_finite(ms[i], Impl::checkpoint_m_prefix + p.name, label);
          Impl::require_finite(vs[i], Impl::checkpoint_v_prefix + p.name, label);
          if (has_master)
            Impl::require_finite(masters[i], Impl::checkpoint_master_prefix + p.name, label);
        }
      }
    }
    std::set<std::string> model_names;
    for (const auto& n : file.names())
      if (!Impl::starts_with(n, "optimizer.")) model_names.insert(n);
    for (const auto& n : file.names()) {
      if (!optimizer || !Impl::starts_with(n, "optimizer.")) continue;
      const bool moment = Impl::starts_with(n, Impl::checkpoint_m_prefix) ||
                          Impl::starts_with(n, Impl::checkpoint_v_prefix);
      const bool master = has_master && Impl::starts_with(n, Impl::checkpoint_master_prefix);
      const std::size_t prefix = std::string(master ? Impl::checkpoint_master_prefix
                                                    : Impl::checkpoint_m_prefix).size();
      if (!(moment || master) || !model_names.count(n.substr(prefix))) extra.push_back(n);
    }
    file_names.assign(model_names.begin(), model_names.end());
    std::sort(file_names.begin(), file_names.end(), Impl::natural_less);
  } catch (const std::exception& e) {
    error = Impl::what_failed(e, path);
  }
  Impl::agree_on_success(world, error);

  // Tensors no rank of the model holds. Every rank read the same file (checked), so the
  // verdict below is the same everywhere.
  std::string joined;
  for (const auto& n : file_names) joined += n + '\n';
  check_agreement(world, "the tensor list of " + label + " as each rank read it", joined);
  std::vector<unsigned char> held(file_names.size(), 0);
  {
    std::map<std::string, std::size_t> index;
    for (std::size_t i = 0; i < file_names.size(); ++i) index[file_names[i]] = i;
    for (std::size_t i = 0; i < params.size(); ++i)
      if (!kept[i]) held[index.at(params[i].name)] = 1;
  }
  if (world.size() > 1 && !held.empty())
    Impl::check_mpi(MPI_Allreduce(MPI_IN_PLACE, held.data(), static_cast<int>(held.size()),
                                  MPI_UNSIGNED_CHAR, MPI_MAX, world.get()),
                    "MPI_Allreduce", "load_checkpoint");
  for (std::size_t i = 0; i < held.size(); ++i)
    if (!held[i]) extra.push_back(file_names[i]);
  if (!extra.empty()) {
    std::string list;
    for (std::size_t i = 0; i < extra.size() && i < 8; ++i)
      list += (i ? ", '" : "'") + extra[i] + "'";
    if (extra.size() > 8) list += Impl::concat(", ... (", extra.size(), " in all)");
    throw Error(Impl::concat(label, ": the checkpoint holds ", extra.size(),
                             " tensor(s) the model does not have: ", list,
                             " (another model or aggregator?)"));
  }

  // Everything checked on every rank: now, and only now, the model changes.
  for (std::size_t i = 0; i < params.size(); ++i)
    if (!kept[i]) Impl::from_host_vector(params[i].value, values[i]);
  if (optimizer) {
    if (!optimizer->has_state()) optimizer->initialize(params);
    for (std::size_t i = 0; i < params.size(); ++i) {
      const auto& s = optimizer->state(params[i].name);
      Impl::from_host_vector(Unmanaged<W*, ExecSpace>(s.m.data(), s.m.size()), ms[i]);
      Impl::from_host_vector(Unmanaged<W*, ExecSpace>(s.v.data(), s.v.size()), vs[i]);
      if (has_master)
        Impl::from_host_vector(Unmanaged<W*, ExecSpace>(s.master.data(), s.master.size()),
                               masters[i]);
    }
    optimizer->set_step_count(info.optimizer_steps);
    if (loss_scale) optimizer->loss_scaler().set_state(loss_scale->first, loss_scale->second);
  }
  return info;
}

}  // namespace Impl

// Loads `path` into `model` (and, unless null, the moments and step count into `optimizer`,
// allocating its state if it has none). Collective over the model's world. On any failure on
// any rank, every rank throws the same dchag::Error and nothing was changed: a value that is
// NaN or infinite is such a failure unless `nonfinite` is NonFinite::Allow, and so is a tensor
// whose bytes fail the checksum the file records.
template <class Model>
CheckpointInfo load_checkpoint(const std::string& path, Model& model,
                               Impl::checkpoint_optimizer_t<Model>* optimizer = nullptr,
                               NonFinite nonfinite = NonFinite::Refuse) {
  return Impl::load_model_state(path, model, optimizer, nonfinite, false);
}

// Starts `model` from the weights of a checkpoint of the same model but, possibly, another
// aggregation: a ClimaX checkpoint (levels {1}, scripts/convert_climax_checkpoint.py) into a
// D-CHAG model. Every tensor of the file is loaded; the model's partial aggregators ("agg.*")
// that the file lacks keep their values (their initialisation), everything else must be in the
// file with its shape, and the rest of the definition (channels, names, widths, depth, head)
// must match. The optimizer starts afresh. Collective, and all-or-nothing, as load_checkpoint.
template <class Model>
CheckpointInfo init_from_checkpoint(const std::string& path, Model& model,
                                    NonFinite nonfinite = NonFinite::Refuse) {
  return Impl::load_model_state(path, model, nullptr, nonfinite, true);
}

}  // namespace dchag

#endif
