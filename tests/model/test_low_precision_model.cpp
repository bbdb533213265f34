// The whole forecast model on 16-bit storage: ChannelViT<bf16> (and fp16) given the weights of a
// ChannelViT<float>, rounded, and the same rounded input computes the float model's prediction,
// loss and gradients to the formats' precision, under both D-CHAG aggregators (the cross-attention
// one is also the baseline's).
#include <dchag/io/safetensors.hpp>
#include <dchag/model/channel_vit.hpp>
#include <dchag/train/checkpoint.hpp>
#include <dchag/train/losses.hpp>
#include <dchag/train/trainer.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <unistd.h>

#include <cmath>
#include <vector>

#include "test_common.hpp"

using namespace dchag_test;

namespace {

dchag::ModelConfig model_config(std::vector<int> levels) {
  dchag::ModelConfig c;
  c.channels = 8;
  c.height = 8;
  c.width = 16;
  c.patch = 4;
  c.dim = 32;
  c.depth = 2;
  c.heads = 4;
  c.decoder_depth = 1;
  c.levels = std::move(levels);
  c.seed = 9;
  return c;
}

template <class V>
std::vector<double> host_values(const V& v) {
  const auto h = to_host(v);
  std::vector<double> out(h.size());
  for (std::size_t i = 0; i < h.size(); ++i) out[i] = double(h.data()[i]);
  return out;
}

// dst <- src's values as float (the same rounded numbers).
template <class Src, class Dst>
void widen_into(const Src& src, const Dst& dst) {
  const auto hs = to_host(src);
  auto hd = Kokkos::create_mirror_view(dst);
  for (std::size_t k = 0; k < hs.size(); ++k) hd.data()[k] = float(hs.data()[k]);
  Kokkos::deep_copy(dst, hd);
}

// max |a - b| / max |b|.
double relative(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::fabs(a[i] - b[i]));
    scale = std::max(scale, std::fabs(b[i]));
  }
  return diff / scale;
}

// The float model's weights, rounded to T, in both models.
template <class Wide, class Narrow>
void share_rounded_weights(Wide& wide, Narrow& narrow) {
  using T = typename Narrow::scalar;
  const auto pw = wide.parameters();
  const auto pn = narrow.parameters();
  REQUIRE(pw.size() == pn.size());
  for (std::size_t i = 0; i < pw.size(); ++i) {
    REQUIRE(pw[i].name == pn[i].name);
    auto hw = Kokkos::create_mirror_view(pw[i].value);
    auto hn = Kokkos::create_mirror_view(pn[i].value);
    Kokkos::deep_copy(hw, pw[i].value);
    for (std::size_t k = 0; k < hw.size(); ++k) {
      hn(k) = T(hw(k));
      hw(k) = float(hn(k));
    }
    Kokkos::deep_copy(pw[i].value, hw);
    Kokkos::deep_copy(pn[i].value, hn);
  }
}

// loss_scale: the loss gradient is that many times larger (IEEE half needs it, below), and the
// parameter gradients are compared divided by it.
template <class T, class Policy>
void compare(const dchag::ModelConfig& cfg, double tolerance, double loss_scale = 1) {
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  dchag::ChannelViT<float, Space, Policy> wide(cfg);
  dchag::ChannelViT<T, Space, Policy> narrow(cfg);
  // The same rounded weights: the comparison is then of the arithmetic only.
  share_rounded_weights(wide, narrow);
  const auto pw = wide.parameters();
  const auto pn = narrow.parameters();
  const int B = 2;
  dchag::View4<T, Space> xn("xn", B, cfg.channels, cfg.height, cfg.width);
  dchag::View4<T, Space> yn("yn", B, cfg.channels, cfg.height, cfg.width);
  dchag::View1<T, Space> lead_n("lead_n", B), lat_n("lat_n", cfg.height);
  fill_random(xn, 1);
  fill_random(yn, 2);
  Kokkos::deep_copy(lead_n, T(0.5));
  Kokkos::deep_copy(lat_n, T(1));
  dchag::View4<float, Space> xw("xw", B, cfg.channels, cfg.height, cfg.width);
  dchag::View4<float, Space> yw("yw", B, cfg.channels, cfg.height, cfg.width);
  dchag::View1<float, Space> lead_w("lead_w", B), lat_w("lat_w", cfg.height);
  widen_into(xn, xw);
  widen_into(yn, yw);
  Kokkos::deep_copy(lead_w, 0.5f);
  Kokkos::deep_copy(lat_w, 1.0f);

  const auto pred_w = wide.forward(space, xw, lead_w);
  const auto pred_n = narrow.forward(space, xn, lead_n);
  CHECK(relative(host_values(pred_n), host_values(pred_w)) < tolerance);

  dchag::View4<float, Space> dw("dw", pred_w.extent(0), pred_w.extent(1), pred_w.extent(2),
                                pred_w.extent(3));
  dchag::View4<T, Space> dn("dn", pred_n.extent(0), pred_n.extent(1), pred_n.extent(2),
                            pred_n.extent(3));
  const double loss_w = dchag::lat_weighted_mse(space, pred_w, yw, lat_w, dw);
  const double loss_n =
      dchag::Impl::lat_weighted_mse_unchecked(space, pred_n, yn, lat_n, dn, 0, loss_scale);
  CHECK(loss_n == doctest::Approx(loss_w).epsilon(tolerance));
  wide.backward(space, dw);
  narrow.backward(space, dn);
  // Every parameter's gradient, relative to its own largest entry.
  for (std::size_t i = 0; i < pw.size(); ++i) {
    CAPTURE(pw[i].name);
    std::vector<double> g = host_values(pn[i].grad);
    for (auto& v : g) v /= loss_scale;
    CHECK(relative(g, host_values(pw[i].grad)) < 4 * tolerance);
  }
}

}  // namespace

TEST_CASE("ChannelViT<bf16> and <fp16> compute the float model's prediction and gradients") {
  using DL = dchag::DistributedChannels<dchag::LinearAggregator>;
  using DC = dchag::DistributedChannels<dchag::CrossAttentionAggregator>;
  // Relative to the largest value: a handful of 16-bit roundings per layer, through two blocks.
  compare<dchag::bf16, DL>(model_config({4, 1}), 3e-2);
  compare<dchag::bf16, DC>(model_config({4, 1}), 3e-2);
  // IEEE half with a loss scale of 2^16: the smallest gradients (1e-9) are below its smallest
  // subnormal (6e-8) unless scaled.
  compare<dchag::fp16, DL>(model_config({4, 1}), 4e-3, 65536);
}

TEST_CASE("fp16 gradients underflow without a loss scale") {
  using DL = dchag::DistributedChannels<dchag::LinearAggregator>;
  using Space = Kokkos::DefaultExecutionSpace;
  Space space;
  const auto cfg = model_config({4, 1});
  dchag::ChannelViT<dchag::fp16, Space, DL> model(cfg);
  dchag::View4<dchag::fp16, Space> x("x", 2, cfg.channels, cfg.height, cfg.width);
  dchag::View4<dchag::fp16, Space> y("y", 2, cfg.channels, cfg.height, cfg.width);
  dchag::View1<dchag::fp16, Space> lead("lead", 2), lat("lat", cfg.height);
  fill_random(x, 1);
  fill_random(y, 2);
  Kokkos::deep_copy(lat, dchag::fp16(1.0f));
  const auto pred = model.forward(space, x, lead);
  dchag::View4<dchag::fp16, Space> d("d", pred.extent(0), pred.extent(1), pred.extent(2),
                                     pred.extent(3));
  dchag::lat_weighted_mse(space, pred, y, lat, d);
  model.backward(space, d);
  double largest = 0;
  for (const auto& p : model.parameters())
    if (p.name == "var_query")
      for (double v : host_values(p.grad)) largest = std::max(largest, std::fabs(v));
  CHECK(largest == 0.0);  // every entry of the query's gradient (about 1e-9) flushed to zero
}

namespace {
using Space = Kokkos::DefaultExecutionSpace;
using DL = dchag::DistributedChannels<dchag::LinearAggregator>;

// A fixed batch to fit: the target is the input one step along the width (a learnable map).
template <class T>
struct Batch {
  dchag::View4<T, Space> x, y;
  dchag::View1<T, Space> lead, lat;
  explicit Batch(const dchag::ModelConfig& c, int B)
      : x("x", B, c.channels, c.height, c.width), y("y", B, c.channels, c.height, c.width),
        lead("lead", B), lat("lat", c.height) {
    auto hx = Kokkos::create_mirror_view(x);
    auto hy = Kokkos::create_mirror_view(y);
    for (int b = 0; b < B; ++b)
      for (int ch = 0; ch < c.channels; ++ch)
        for (int h = 0; h < c.height; ++h)
          for (int w = 0; w < c.width; ++w) {
            const auto at = [&](int ww) {
              return std::sin(0.7 * ww + 1.3 * h + 0.5 * ch + b);
            };
            hx(b, ch, h, w) = T(at(w));
            hy(b, ch, h, w) = T(at(w + 1));
          }
    Kokkos::deep_copy(x, hx);
    Kokkos::deep_copy(y, hy);
    Kokkos::deep_copy(lead, T(0.25));
    Kokkos::deep_copy(lat, T(1));
  }
};

dchag::TrainConfig train_config() {
  dchag::TrainConfig t;
  t.steps = 100;
  t.lr = 2e-3;
  t.warmup_steps = 5;
  return t;
}
}  // namespace

TEST_CASE("bf16 training follows the float loss curve over 100 steps") {
  const auto cfg = model_config({4, 1});
  dchag::ChannelViT<float, Space, DL> wide(cfg);
  dchag::ChannelViT<dchag::bf16, Space, DL> narrow(cfg);
  share_rounded_weights(wide, narrow);
  dchag::ForecastTrainer<decltype(wide)> tw(wide, train_config());
  dchag::ForecastTrainer<decltype(narrow)> tn(narrow, train_config());
  const Batch<float> bw(cfg, 4);
  const Batch<dchag::bf16> bn(cfg, 4);
  Space space;
  // The stated tolerance: |log(bf16 loss / float loss)| < 0.4 at every step, and within 10% over
  // the last 20. (Measured: 0.35 at most, during the steepest descent, where the bf16 curve runs
  // about one step behind; under 10% from step 80 on, 6% at step 100.)
  double worst_log = 0, worst_end = 0, first = 0, last_w = 0, last_n = 0;
  for (int s = 0; s < 100; ++s) {
    last_w = tw.step(space, bw.x, bw.y, bw.lead, bw.lat).loss;
    last_n = tn.step(space, bn.x, bn.y, bn.lead, bn.lat).loss;
    if (s == 0) first = last_w;
    worst_log = std::max(worst_log, std::fabs(std::log(last_n / last_w)));
    if (s >= 80) worst_end = std::max(worst_end, std::fabs(last_n - last_w) / last_w);
    if (std::getenv("DCHAG_PRINT_CURVES")) std::printf("%d %.6g %.6g\n", s, last_w, last_n);
  }
  MESSAGE("loss: first " << first << ", after 100 steps float " << last_w << ", bf16 " << last_n
                         << "; largest |log ratio| " << worst_log << ", over the last 20 steps "
                         << worst_end);
  CHECK(last_w < 0.01 * first);  // the model learns the map
  CHECK(worst_log < 0.4);
  CHECK(worst_end < 0.10);
}

TEST_CASE_TEMPLATE("a 16-bit run resumes from its checkpoint with the same losses", T,
                   dchag::bf16, dchag::fp16) {
  const auto cfg = model_config({4, 1});
  const Batch<T> batch(cfg, 2);
  Space space;
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() /
                       ("dchag_test_low_precision_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string path = (dir / "run.safetensors").string();
  // fp16: a scaler that starts at 2^20 and grows every 2 good steps, so that at the checkpoint
  // (step 5) its scale (2^22, measured) and growth count (1) are neither the defaults nor a
  // fresh run's start.
  dchag::LossScalerConfig scaling;
  scaling.init_scale = 1048576.0;
  scaling.growth_interval = 2;
  std::vector<double> straight, resumed;
  double saved_scale = 0;
  std::int64_t saved_tracker = -1;
  {
    dchag::ChannelViT<T, Space, DL> model(cfg);
    dchag::ForecastTrainer<decltype(model)> trainer(model, train_config());
    trainer.optimizer().loss_scaler() = dchag::LossScaler<T>(scaling);
    for (int s = 0; s < 8; ++s) {
      if (s == 5) {
        dchag::save_checkpoint(path, model, &trainer.optimizer(), trainer.step_count());
        saved_scale = trainer.optimizer().loss_scaler().scale();
        saved_tracker = trainer.optimizer().loss_scaler().growth_tracker();
      }
      straight.push_back(trainer.step(space, batch.x, batch.y, batch.lead, batch.lat).loss);
    }
  }
  {
    dchag::ChannelViT<T, Space, DL> model(cfg);
    dchag::ForecastTrainer<decltype(model)> trainer(model, train_config());
    trainer.optimizer().loss_scaler() = dchag::LossScaler<T>(scaling);
    const auto info = dchag::load_checkpoint(path, model, &trainer.optimizer());
    trainer.set_step_count(info.step);
    CHECK(trainer.optimizer().loss_scaler().scale() == saved_scale);
    CHECK(trainer.optimizer().loss_scaler().growth_tracker() == saved_tracker);
    for (int s = 5; s < 8; ++s)
      resumed.push_back(trainer.step(space, batch.x, batch.y, batch.lead, batch.lat).loss);
  }
  for (int s = 0; s < 3; ++s) CHECK(resumed[s] == straight[5 + s]);
  // The weights as BF16 / F16, the optimizer's float master weights and moments as F32.
  const auto file = dchag::SafetensorsFile::read(path);
  const std::string dtype = dchag::ScalarTraits<T>::dtype;
  CHECK(file.info("var_embed").dtype == dtype);
  CHECK(file.info("optimizer.master.var_embed").dtype == "F32");
  CHECK(file.info("optimizer.m.var_embed").dtype == "F32");
  CHECK(file.metadata().at("scalar") == dtype);
  if (dchag::LossScaler<T>::enabled) {
    MESSAGE("fp16 checkpoint at step 5: loss scale " << saved_scale << ", growth tracker "
                                                     << saved_tracker);
    CHECK(saved_scale != scaling.init_scale);
    CHECK(saved_tracker != 0);
    CHECK(file.metadata().count("optimizer.loss_scale") == 1);
  } else {
    CHECK(file.metadata().count("optimizer.loss_scale") == 0);
  }
  fs::remove_all(dir);
}

TEST_CASE("an fp16 checkpoint with a bad loss scale is refused, naming the entry") {
  const auto cfg = model_config({4, 1});
  const Batch<dchag::fp16> batch(cfg, 2);
  Space space;
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() /
                       ("dchag_test_loss_scale_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string good = (dir / "good.safetensors").string();
  const std::string bad = (dir / "bad.safetensors").string();
  dchag::ChannelViT<dchag::fp16, Space, DL> model(cfg);
  dchag::ForecastTrainer<decltype(model)> trainer(model, train_config());
  trainer.step(space, batch.x, batch.y, batch.lead, batch.lat);
  dchag::save_checkpoint(good, model, &trainer.optimizer(), trainer.step_count());
  // The file again, with one metadata entry replaced (the values through double: exact).
  auto rewrite = [&](const std::string& key, const std::string& value) {
    const auto f = dchag::SafetensorsFile::read(good);
    std::map<std::string, std::string> meta = f.metadata();
    meta[key] = value;
    std::vector<std::vector<double>> values;
    std::vector<std::vector<std::size_t>> shapes;
    for (const auto& n : f.names()) {
      values.push_back(f.read<double>(n));
      shapes.push_back(f.info(n).shape);
    }
    std::vector<dchag::SafetensorsTensor<double>> tensors;
    for (std::size_t i = 0; i < values.size(); ++i)
      tensors.push_back({f.names()[i], shapes[i], values[i].data()});
    dchag::write_safetensors<double>(bad, tensors, meta);
  };
  const double scale = trainer.optimizer().loss_scaler().scale();
  const std::int64_t tracker = trainer.optimizer().loss_scaler().growth_tracker();
  const std::pair<const char*, const char*> cases[] = {
      {"optimizer.loss_scale", "-1"},
      {"optimizer.loss_scale", "inf"},
      {"optimizer.loss_scale", "big"},
      {"optimizer.loss_scale_growth_tracker", "2000"},
      {"optimizer.loss_scale_growth_tracker", "-1"}};
  for (const auto& entry : cases) {
    // (not a structured binding: clang refuses to capture those in CAPTURE's lambda)
    const std::string key = entry.first, value = entry.second;
    CAPTURE(key);
    CAPTURE(value);
    rewrite(key, value);
    dchag::ChannelViT<dchag::fp16, Space, DL> other(cfg);
    dchag::ForecastTrainer<decltype(other)> resumed(other, train_config());
    resumed.optimizer().loss_scaler().set_state(1024.0, 3);
    CHECK_THROWS_WITH_AS(dchag::load_checkpoint(bad, other, &resumed.optimizer()),
                         doctest::Contains(key.c_str()), dchag::Error);
    // Nothing was changed: the scaler keeps the state it had.
    CHECK(resumed.optimizer().loss_scaler().scale() == 1024.0);
    CHECK(resumed.optimizer().loss_scaler().growth_tracker() == 3);
  }
  // The good file restores the saved scale.
  dchag::ChannelViT<dchag::fp16, Space, DL> other(cfg);
  dchag::ForecastTrainer<decltype(other)> resumed(other, train_config());
  resumed.optimizer().loss_scaler().set_state(1024.0, 3);
  dchag::load_checkpoint(good, other, &resumed.optimizer());
  CHECK(resumed.optimizer().loss_scaler().scale() == scale);
  CHECK(resumed.optimizer().loss_scaler().growth_tracker() == tracker);
  fs::remove_all(dir);
}

TEST_CASE("fp16 training with dynamic loss scaling learns like float") {
  const auto cfg = model_config({4, 1});
  dchag::ChannelViT<float, Space, DL> wide(cfg);
  dchag::ChannelViT<dchag::fp16, Space, DL> narrow(cfg);
  share_rounded_weights(wide, narrow);
  dchag::ForecastTrainer<decltype(wide)> tw(wide, train_config());
  dchag::ForecastTrainer<decltype(narrow)> tn(narrow, train_config());
  const Batch<float> bw(cfg, 4);
  const Batch<dchag::fp16> bn(cfg, 4);
  Space space;
  int skipped = 0;
  double worst_log = 0, last_w = 0, last_n = 0;
  for (int s = 0; s < 60; ++s) {
    last_w = tw.step(space, bw.x, bw.y, bw.lead, bw.lat).loss;
    const dchag::StepReport r = tn.step(space, bn.x, bn.y, bn.lead, bn.lat);
    last_n = r.loss;
    skipped += r.skipped;
    worst_log = std::max(worst_log, std::fabs(std::log(last_n / last_w)));
  }
  MESSAGE("fp16: after 60 steps float " << last_w << ", fp16 " << last_n << ", largest |log ratio| "
                                        << worst_log << ", " << skipped << " steps skipped");
  CHECK(worst_log < 0.4);
  CHECK(skipped < 10);  // a few at most, while the scale finds its level
}

namespace {
struct StepMemory {
  double state = 0;        // after construction: weights, gradients, optimizer state
  double activations = 0;  // what a training step adds at its peak
};

template <class T>
StepMemory step_memory(const dchag::ModelConfig& cfg, int B) {
  Space space;
  space.fence();
  const double before = double(dchag::MemoryTracker::current_total_bytes());
  StepMemory m;
  {
    dchag::ChannelViT<T, Space, DL> model(cfg);
    dchag::ForecastTrainer<decltype(model)> trainer(model, train_config());
    const Batch<T> batch(cfg, B);
    space.fence();
    m.state = double(dchag::MemoryTracker::current_total_bytes()) - before;
    dchag::MemoryTracker::reset_peak();
    const double start = double(dchag::MemoryTracker::current_total_bytes());
    for (int s = 0; s < 2; ++s) trainer.step(space, batch.x, batch.y, batch.lead, batch.lat);
    space.fence();
    m.activations = double(dchag::MemoryTracker::peak_total_bytes()) - start;
  }
  return m;
}
}  // namespace

TEST_CASE("bf16 halves the activation memory of a training step, not the optimizer state") {
  dchag::MemoryTracker::install();
  auto cfg = model_config({4, 1});
  cfg.channels = 16;
  cfg.height = 16;
  cfg.width = 32;
  cfg.dim = 64;
  const StepMemory f = step_memory<float>(cfg, 4);
  const StepMemory b = step_memory<dchag::bf16>(cfg, 4);
  MESSAGE("training step, C=16 16x32 patch 4 D=64 depth 2, B=4: float state "
          << f.state / 1048576 << " MiB, step " << f.activations / 1048576 << " MiB; bf16 state "
          << b.state / 1048576 << " MiB, step " << b.activations / 1048576 << " MiB (ratio "
          << b.activations / f.activations << ")");
  // Activations and their gradients are 16-bit; LayerNorm statistics and a few sums stay float.
  CHECK(b.activations < 0.6 * f.activations);
  CHECK(b.activations > 0.45 * f.activations);
  // Weights and gradients halve, float master weights are added: 2 + 2 + 4 + 8 bytes per
  // parameter against 4 + 4 + 8, the same.
  CHECK(b.state == doctest::Approx(f.state).epsilon(0.05));
}
