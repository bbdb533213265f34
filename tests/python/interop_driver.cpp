// The C++ side of the PyTorch interoperability tests (tests/python/interop_test.py). Runs on any
// number of ranks (tp = all of them):
//
//   interop_driver write --aggregator none|linear|cross_attention --dir DIR
//       builds the test model in double, trains it two steps (so that no bias is still zero),
//       and writes DIR/cpp_checkpoint.safetensors, a batch DIR/batch.safetensors (x, y,
//       lead_times, lat_weights) and the model's output on it, DIR/cpp_output.safetensors
//       (prediction, loss);
//   interop_driver run --checkpoint FILE --batch FILE --out FILE [--resave FILE]
//       rebuilds the model a checkpoint describes (its metadata), loads it, runs the batch and
//       writes the output; --resave writes the loaded model back out as a checkpoint.
#include <dchag/dchag.hpp>
#include <dchag/io/safetensors.hpp>
#include <dchag/train/checkpoint.hpp>
#include <mpi.h>

#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace {

using Space = Kokkos::DefaultExecutionSpace;
using T = double;
using View4 = dchag::View4<T, Space>;
using View1 = dchag::View1<T, Space>;

// Small, but with every feature the file format must carry: named variables, fewer output than
// input variables and not in input order, a two-layer head, lead times, and (cross-attention) a
// three-level tree.
dchag::ModelConfig test_config(const std::string& aggregator) {
  dchag::ModelConfig c;
  c.channels = 8;
  c.variables = {"z500", "t850", "t2m", "u10", "v10", "q700", "r850", "tp"};
  c.out_variables = {"t2m", "z500", "tp"};
  c.height = 8;
  c.width = 16;
  c.patch = 4;
  c.dim = 16;
  c.depth = 2;
  c.heads = 4;
  c.mlp_ratio = 2.5;  // a fractional ratio, as ClimaX allows: hidden int(16 * 2.5) = 40
  c.decoder_depth = 2;
  c.lead_time = true;
  c.seed = 11;
  if (aggregator == "none") c.levels = {1};
  else if (aggregator == "linear") c.levels = {4, 1};
  else if (aggregator == "cross_attention") c.levels = {4, 2, 1};
  else throw dchag::Error("interop_driver: unknown aggregator '" + aggregator + "'");
  return c;
}

struct Batch {
  View4 x, y;
  View1 lead, w;
};

template <class View>
std::vector<T> host_values(const View& v) {
  auto h = Kokkos::create_mirror_view(v);
  Kokkos::deep_copy(h, v);
  return std::vector<T>(h.data(), h.data() + h.size());
}

template <class View>
void set_values(const View& v, const std::vector<T>& values) {
  auto h = Kokkos::create_mirror_view(v);
  dchag::Impl::require(values.size() == h.size(), "interop_driver: ", values.size(),
                       " values for view ", dchag::Impl::shape_of(v));
  std::copy(values.begin(), values.end(), h.data());
  Kokkos::deep_copy(v, h);
}

std::vector<std::size_t> dims(const View4& v) {
  return {v.extent(0), v.extent(1), v.extent(2), v.extent(3)};
}

Batch random_batch(const dchag::ModelConfig& c, int B) {
  Batch b{View4("x", B, c.channels, c.height, c.width),
          View4("y", B, c.out_channels(), c.height, c.width), View1("lead", B),
          View1("w", c.height)};
  std::mt19937_64 gen(2024);
  std::uniform_real_distribution<double> unit(-1.0, 1.0);
  auto fill = [&](auto& v, double lo, double hi) {
    std::vector<T> h(v.size());
    for (auto& x : h) x = lo + (hi - lo) * (unit(gen) + 1.0) / 2.0;
    set_values(v, h);
  };
  fill(b.x, -1, 1);
  fill(b.y, -1, 1);
  fill(b.lead, 0, 1);
  fill(b.w, 0.5, 1.5);
  return b;
}

Batch read_batch(const std::string& path) {
  const auto f = dchag::SafetensorsFile::read(path);
  auto view4 = [&](const char* name) {
    const auto& s = f.info(name).shape;
    dchag::Impl::require(s.size() == 4, f.label(), ": '", name, "' must be [B, C, H, W]");
    View4 v(std::string(name), s[0], s[1], s[2], s[3]);
    set_values(v, f.read<T>(name));
    return v;
  };
  auto view1 = [&](const char* name) {
    View1 v(std::string(name), f.info(name).elements());
    set_values(v, f.read<T>(name));
    return v;
  };
  return {view4("x"), view4("y"), view1("lead_times"), view1("lat_weights")};
}

// This rank's share of the batch: its input channels and the targets of its outputs.
template <class Model>
std::pair<View4, View4> local_batch(const Model& model, const Batch& b) {
  const auto chans = Kokkos::make_pair(model.channel_begin(),
                                       model.channel_begin() + model.channel_count());
  View4 x("x_local", b.x.extent(0), model.channel_count(), b.x.extent(2), b.x.extent(3));
  Kokkos::deep_copy(x, Kokkos::subview(b.x, Kokkos::ALL, chans, Kokkos::ALL, Kokkos::ALL));
  const auto& mine = model.predicted_outputs();
  View4 y("y_local", b.y.extent(0), mine.size(), b.y.extent(2), b.y.extent(3));
  for (std::size_t k = 0; k < mine.size(); ++k)
    Kokkos::deep_copy(Kokkos::subview(y, Kokkos::ALL, k, Kokkos::ALL, Kokkos::ALL),
                      Kokkos::subview(b.y, Kokkos::ALL, mine[k], Kokkos::ALL, Kokkos::ALL));
  return {x, y};
}

// Prediction and latitude-weighted MSE of the whole batch (each rank passes its channels; the
// prediction is joined over the ranks).
template <class Model>
std::pair<View4, double> evaluate(Model& model, const Batch& b) {
  Space space;
  const auto xy = local_batch(model, b);
  const View4 pred = model.forward(space, xy.first, b.lead);
  View4 dpred("dpred", pred.extent(0), pred.extent(1), pred.extent(2), pred.extent(3));
  const double loss = dchag::forecast_loss(space, model, pred, xy.second, b.w, dpred);
  const View4 whole = model.gather_prediction(space, pred);
  View4 keep("prediction", whole.extent(0), whole.extent(1), whole.extent(2), whole.extent(3));
  Kokkos::deep_copy(keep, whole);
  return {keep, loss};
}

void write_output(const std::string& path, const View4& pred, double loss) {
  const auto p = host_values(pred);
  dchag::write_safetensors<T>(path, {{"prediction", dims(pred), p.data()}, {"loss", {}, &loss}});
}

template <class Policy>
int write(const dchag::ModelConfig& c, const std::string& dir) {
  const dchag::Communicator world;
  const dchag::ProcessGrid grid(world, world.size(), 1, 1);
  dchag::ChannelViT<T, Space, Policy> model(c, grid);
  const Batch b = random_batch(c, 2);
  {  // two steps of plain AdamW on the batch: every parameter moves off its initial value
    Space space;
    dchag::AdamW<T, Space> opt;
    const auto params = model.parameters();
    for (int s = 0; s < 2; ++s) {
      dchag::zero_grad(space, params);
      const auto xy = local_batch(model, b);
      const auto pred = model.forward(space, xy.first, b.lead);
      View4 dpred("dpred", pred.extent(0), pred.extent(1), pred.extent(2), pred.extent(3));
      dchag::forecast_loss(space, model, pred, xy.second, b.w, dpred);
      model.backward(space, dpred);
      opt.step(space, params, 0.05);
    }
  }
  dchag::save_checkpoint(dir + "/cpp_checkpoint.safetensors", model, 2);
  const auto [pred, loss] = evaluate(model, b);
  if (world.rank() == 0) {
    const auto x = host_values(b.x), y = host_values(b.y), lead = host_values(b.lead),
               w = host_values(b.w);
    dchag::write_safetensors<T>(dir + "/batch.safetensors",
                                {{"x", dims(b.x), x.data()},
                                 {"y", dims(b.y), y.data()},
                                 {"lead_times", {lead.size()}, lead.data()},
                                 {"lat_weights", {w.size()}, w.data()}});
    write_output(dir + "/cpp_output.safetensors", pred, loss);
    std::printf("interop_driver: %s on %d rank(s); loss %.17g\n", c.describe().c_str(),
                world.size(), loss);
  }
  return 0;
}

template <class Policy>
int run(const dchag::CheckpointInfo& info, const std::map<std::string, std::string>& opt) {
  const dchag::Communicator world;
  const dchag::ProcessGrid grid(world, world.size(), 1, 1);
  dchag::ChannelViT<T, Space, Policy> model(info.config, grid);
  dchag::load_checkpoint(opt.at("--checkpoint"), model);
  const Batch b = read_batch(opt.at("--batch"));
  const auto [pred, loss] = evaluate(model, b);
  if (world.rank() == 0) write_output(opt.at("--out"), pred, loss);
  if (opt.count("--resave")) dchag::save_checkpoint(opt.at("--resave"), model, info.step);
  if (world.rank() == 0)
    std::printf("interop_driver: ran %s on %d rank(s); loss %.17g\n",
                info.config.describe().c_str(), world.size(), loss);
  return 0;
}

int dispatch(int argc, char* argv[]) {
  dchag::Impl::require(argc >= 2, "usage: interop_driver write|run [options] (see the source)");
  const std::string command = argv[1];
  std::map<std::string, std::string> opt;
  for (int i = 2; i + 1 < argc; i += 2) opt[argv[i]] = argv[i + 1];
  auto need = [&](const char* key) {
    dchag::Impl::require(opt.count(key) == 1, "interop_driver ", command, ": ", key,
                         " is required");
  };
  using DchagL = dchag::DistributedChannels<dchag::LinearAggregator>;
  using DchagC = dchag::DistributedChannels<dchag::CrossAttentionAggregator>;
  if (command == "write") {
    need("--aggregator");
    need("--dir");
    const std::string agg = opt.at("--aggregator");
    const auto c = test_config(agg);
    if (agg == "none") return write<dchag::TensorParallel>(c, opt.at("--dir"));
    if (agg == "linear") return write<DchagL>(c, opt.at("--dir"));
    return write<DchagC>(c, opt.at("--dir"));
  }
  if (command == "run") {
    need("--checkpoint");
    need("--batch");
    need("--out");
    const auto info = dchag::read_checkpoint_info(opt.at("--checkpoint"));
    if (info.aggregator == "none") return run<dchag::TensorParallel>(info, opt);
    if (info.aggregator == "linear") return run<DchagL>(info, opt);
    if (info.aggregator == "cross_attention") return run<DchagC>(info, opt);
    throw dchag::Error("interop_driver: checkpoint aggregator '" + info.aggregator +
                       "' is not one this driver builds");
  }
  throw dchag::Error("interop_driver: unknown command '" + command + "' (write or run)");
}

}  // namespace

int main(int argc, char* argv[]) {
  MPI_Init(&argc, &argv);
  int rc = 0;
  Kokkos::initialize(argc, argv);
  try {
    rc = dispatch(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "interop_driver: %s\n", e.what());
    rc = 1;
  }
  Kokkos::finalize();
  MPI_Finalize();
  return rc;
}
