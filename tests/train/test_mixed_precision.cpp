#include <dchag/core/low_precision.hpp>
#include <dchag/core/scalar_traits.hpp>
#include <dchag/io/safetensors.hpp>
#include <dchag/train/adamw.hpp>
#include <dchag/train/checkpoint.hpp>
#include <dchag/train/grad_clip.hpp>
#include <dchag/train/gradient_sync.hpp>
#include <dchag/train/optimizer_loop.hpp>
#include <dchag/train/loss_scaler.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "test_common.hpp"

// The parts of mixed-precision training around the compute: the optimizer's fp32 master weights,
// clipping, loss scaling, and 16-bit tensors in files and checkpoints.

namespace {

using Space = Kokkos::DefaultExecutionSpace;
using dchag::bf16;
using dchag::fp16;

// Parameters of a 16-bit (or float) model: storage the test owns, a list that refers to it.
template <class T>
struct Params {
  dchag::View1<T, Space> w1{"w1", 300}, g1{"g1", 300}, w2{"w2", 7}, g2{"g2", 7};
  dchag::ParameterList<T, Space> list() const {
    dchag::ParameterList<T, Space> l;
    dchag::Impl::add_parameter(l, "blocks.0.weight", w1, g1, true);
    dchag::Impl::add_parameter(l, "blocks.0.bias", w2, g2, false);
    return l;
  }
};

template <class View, class F>
void fill(const View& v, F&& f) {
  auto h = Kokkos::create_mirror_view(v);
  for (std::size_t i = 0; i < h.size(); ++i) h(i) = f(i);
  Kokkos::deep_copy(v, h);
}

template <class View>
auto host(const View& v) {
  return Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), v);
}

float weight_of(std::size_t i) { return 0.5f + 0.37f * std::sin(0.7f * float(i)); }
float grad_of(int step, std::size_t i) { return 0.01f * std::cos(0.3f * float(i) + float(step)); }

template <class T>
void set_grads(const Params<T>& p, int step) {
  fill(p.g1, [&](std::size_t i) { return T(grad_of(step, i)); });
  fill(p.g2, [&](std::size_t i) { return T(grad_of(step, 1000 + i)); });
}

}  // namespace

TEST_CASE("bf16 AdamW is float AdamW on the master weights, rounded into the parameters") {
  Space space;
  Params<bf16> low;
  Params<float> ref;  // the master copy, as a float model would hold it
  fill(low.w1, [](std::size_t i) { return bf16(weight_of(i)); });
  fill(low.w2, [](std::size_t i) { return bf16(weight_of(500 + i)); });
  // The master starts as the bf16 weights, exactly.
  fill(ref.w1, [](std::size_t i) { return float(bf16(weight_of(i))); });
  fill(ref.w2, [](std::size_t i) { return float(bf16(weight_of(500 + i))); });
  dchag::AdamWConfig config;
  config.lr = 3e-3;
  config.weight_decay = 0.1;
  dchag::AdamW<bf16, Space> opt(low.list(), config);
  dchag::AdamW<float, Space> ref_opt(ref.list(), config);
  static_assert(dchag::AdamW<bf16, Space>::has_master && !dchag::AdamW<float, Space>::has_master);
  for (int step = 0; step < 5; ++step) {
    set_grads(low, step);
    // The float reference sees the same (bf16) gradients, converted exactly.
    fill(ref.g1, [&](std::size_t i) { return float(bf16(grad_of(step, i))); });
    fill(ref.g2, [&](std::size_t i) { return float(bf16(grad_of(step, 1000 + i))); });
    opt.step(space, low.list());
    ref_opt.step(space, ref.list());
  }
  space.fence();
  for (const char* name : {"blocks.0.weight", "blocks.0.bias"}) {
    const auto master = host(opt.state(name).master);
    const auto m = host(opt.state(name).m), v = host(opt.state(name).v);
    const auto rm = host(ref_opt.state(name).m), rv = host(ref_opt.state(name).v);
    const bool first = std::string(name) == "blocks.0.weight";
    const auto w = host(first ? low.w1 : low.w2);
    const auto rw = host(first ? ref.w1 : ref.w2);
    for (std::size_t i = 0; i < w.size(); ++i) {
      REQUIRE(master(i) == rw(i));  // bit for bit the float update
      REQUIRE(m(i) == rm(i));
      REQUIRE(v(i) == rv(i));
      REQUIRE(w(i).bits == bf16(rw(i)).bits);  // rounded once
    }
  }
}

TEST_CASE("updates below half a bf16 ulp accumulate in the master weights") {
  Space space;
  Params<bf16> p;
  fill(p.w1, [](std::size_t) { return bf16(1.0f); });
  fill(p.w2, [](std::size_t) { return bf16(1.0f); });
  fill(p.g1, [](std::size_t) { return bf16(1.0f); });
  fill(p.g2, [](std::size_t) { return bf16(1.0f); });
  // A constant gradient: AdamW moves each weight by ~lr per step (m / sqrt(v) = 1). Half a bf16
  // ulp at 1 is 2^-8 (below 1) and 2^-9 (above); lr = 2^-12 is a sixteenth of an ulp.
  dchag::AdamWConfig config;
  config.lr = std::ldexp(1.0, -12);
  config.weight_decay = 0;
  dchag::AdamW<bf16, Space> opt(p.list(), config);
  float previous_master = 1.0f;
  int weight_moved_at = -1;
  for (int step = 1; step <= 1000; ++step) {
    opt.step(space, p.list());
    const float master = host(opt.state("blocks.0.bias").master)(0);
    const float weight = host(p.w2)(0);
    REQUIRE(master < previous_master);  // the master moves every step
    previous_master = master;
    if (step == 1) {
      // One update alone rounds away: a bf16 weight without a master would never move.
      CHECK(float(bf16(1.0f - float(config.lr))) == 1.0f);
      CHECK(weight == 1.0f);
    }
    if (weight_moved_at < 0 && weight != 1.0f) weight_moved_at = step;
    REQUIRE(weight == float(bf16(master)));
  }
  // 1000 steps of ~2^-12: the master is ~1 - 0.244; the weight followed it.
  CHECK(previous_master == doctest::Approx(1.0 - 1000 * std::ldexp(1.0, -12)).epsilon(1e-3));
  CHECK(weight_moved_at > 1);
  CHECK(weight_moved_at <= 16);  // the first crossing of 1 - 2^-9 (the tie goes to even: 1)
  CHECK(float(host(p.w2)(0)) == doctest::Approx(previous_master).epsilon(1.0 / 128));
}

TEST_CASE("bf16 AdamW takes the master from a parameter written since the last step") {
  Space space;
  Params<bf16> p;
  fill(p.w1, [](std::size_t) { return bf16(1.0f); });
  fill(p.w2, [](std::size_t) { return bf16(1.0f); });
  set_grads(p, 0);
  dchag::AdamWConfig config;
  config.weight_decay = 0;
  dchag::AdamW<bf16, Space> opt(p.list(), config);
  opt.step(space, p.list());
  // Someone loads other weights (a model-only checkpoint, say).
  fill(p.w2, [](std::size_t) { return bf16(4.0f); });
  opt.step(space, p.list());
  const auto w = host(p.w2);
  for (std::size_t i = 0; i < w.size(); ++i)
    CHECK(std::fabs(float(w(i)) - 4.0f) < 0.05f);  // moved from 4 by ~lr, not reset to ~1
}

TEST_CASE("an fp16 AdamW step divides the loss scale out in float") {
  Space space;
  Params<fp16> scaled, plain;
  fill(scaled.w1, [](std::size_t i) { return fp16(weight_of(i)); });
  fill(scaled.w2, [](std::size_t i) { return fp16(weight_of(500 + i)); });
  fill(plain.w1, [](std::size_t i) { return fp16(weight_of(i)); });
  fill(plain.w2, [](std::size_t i) { return fp16(weight_of(500 + i)); });
  // Gradients times 2^10 are exact in fp16 (no overflow for these), so both see the same values.
  fill(scaled.g1, [](std::size_t i) { return fp16(1024.0f * float(fp16(grad_of(0, i)))); });
  fill(scaled.g2, [](std::size_t i) { return fp16(1024.0f * float(fp16(grad_of(0, 1000 + i)))); });
  set_grads(plain, 0);
  dchag::AdamW<fp16, Space> a(scaled.list()), b(plain.list());
  a.step(space, scaled.list(), 1e-3, 1.0 / 1024);
  b.step(space, plain.list(), 1e-3);
  const auto wa = host(scaled.w1), wb = host(plain.w1);
  for (std::size_t i = 0; i < wa.size(); ++i) REQUIRE(wa(i).bits == wb(i).bits);
  CHECK_THROWS_AS(a.step(space, scaled.list(), 1e-3, 0.0), dchag::Error);
}

TEST_CASE("bf16 gradient clipping and averaging work in float") {
  Space space;
  Params<bf16> p;
  fill(p.g1, [](std::size_t) { return bf16(3.0f); });
  fill(p.g2, [](std::size_t) { return bf16(4.0f); });
  // |g|^2 = 300 * 9 + 7 * 16 = 2812 exactly (accumulated in double).
  const auto list = p.list();
  CHECK(dchag::grad_sum_squares(space, list) == 2812.0);
  const double norm = dchag::clip_grad_norm(space, list, 1.0);
  CHECK(norm == doctest::Approx(std::sqrt(2812.0)));
  const float coef = float(1.0 / (std::sqrt(2812.0) + 1e-6));
  CHECK(host(p.g1)(0).bits == bf16(3.0f * coef).bits);
  CHECK(host(p.g2)(6).bits == bf16(4.0f * coef).bits);
  fill(p.g2, [](std::size_t i) {
    return i == 3 ? bf16(std::numeric_limits<float>::infinity()) : bf16(1.0f);
  });
  CHECK_THROWS_WITH_AS(dchag::clip_grad_norm(space, list, 1.0),
                       doctest::Contains("'blocks.0.bias'"), dchag::Error);

  // Data-parallel averaging over one rank: nothing to do, nothing changed.
  const auto grid = dchag::ProcessGrid::single();
  dchag::GradientSync<bf16, Space> sync;
  fill(p.g1, [](std::size_t) { return bf16(3.0f); });
  sync.average(space, grid, list);
  CHECK(float(host(p.g1)(5)) == 3.0f);
  CHECK(dchag::global_grad_norm(space, grid, list) != 0.0);
}

TEST_CASE("LossScaler: fp16 backs off on overflow, grows after the interval; bf16 is identity") {
  Space space;
  const dchag::Communicator comm(MPI_COMM_SELF);
  Params<fp16> p;
  fill(p.g1, [](std::size_t) { return fp16(1.0f); });
  fill(p.g2, [](std::size_t) { return fp16(1.0f); });
  const dchag::ParameterTable<fp16, Space> table(p.list());

  dchag::LossScalerConfig config;
  config.growth_interval = 3;
  dchag::LossScaler<fp16> scaler(config);
  CHECK(dchag::LossScaler<fp16>().scale() == 65536.0);
  CHECK(dchag::LossScaler<fp16>().config().growth_interval == 2000);
  CHECK(scaler.scale() == 65536.0);
  CHECK(scaler.check_finite(space, table, comm));
  // 65504 is finite: a large gradient is not an overflow.
  fill(p.g2, [](std::size_t i) { return fp16(i == 2 ? 65504.0f : 1.0f); });
  CHECK(scaler.check_finite(space, table, comm));
  fill(p.g2, [](std::size_t i) { return fp16(i == 2 ? 70000.0f : 1.0f); });  // rounds to Inf
  CHECK_FALSE(scaler.check_finite(space, table, comm));
  scaler.update(false);
  CHECK(scaler.scale() == 32768.0);
  CHECK(scaler.skipped_steps() == 1);
  fill(p.g2, [](std::size_t i) {
    return i == 0 ? fp16(std::numeric_limits<float>::quiet_NaN()) : fp16(1.0f);
  });
  CHECK_FALSE(scaler.check_finite(space, p.list(), comm));
  scaler.update(false);
  CHECK(scaler.scale() == 16384.0);
  scaler.update(true);
  scaler.update(true);
  CHECK(scaler.scale() == 16384.0);
  CHECK(scaler.growth_tracker() == 2);
  scaler.update(true);
  CHECK(scaler.scale() == 32768.0);
  CHECK(scaler.growth_tracker() == 0);
  // An overflow resets the count of finite steps.
  scaler.update(true);
  scaler.update(false);
  scaler.update(true);
  scaler.update(true);
  CHECK(scaler.scale() == 16384.0);
  scaler.set_state(1024.0, 1);
  CHECK(scaler.scale() == 1024.0);
  CHECK(scaler.inverse_scale() == 1.0 / 1024);
  CHECK_THROWS_AS(scaler.set_state(0.0, 0), dchag::Error);
  CHECK_THROWS_AS(scaler.set_state(2.0, 3), dchag::Error);

  // bf16 and float: never scaled, never skipped, even with Inf gradients (clipping catches
  // those as before).
  static_assert(!dchag::LossScaler<bf16>::enabled && !dchag::LossScaler<float>::enabled &&
                dchag::LossScaler<fp16>::enabled);
  dchag::LossScaler<bf16> identity;
  Params<bf16> b;
  fill(b.g1, [](std::size_t) { return bf16(std::numeric_limits<float>::infinity()); });
  CHECK(identity.scale() == 1.0);
  CHECK(identity.check_finite(space, b.list(), comm));
  identity.update(false);
  CHECK(identity.scale() == 1.0);
  CHECK_THROWS_AS(identity.set_state(2.0, 0), dchag::Error);
}

TEST_CASE("safetensors: BF16 and F16 tensors hold the raw bits; reading converts any of four") {
  const std::string path = "test_mixed_precision_tensors.safetensors";
  std::vector<bf16> b;
  std::vector<fp16> h;
  std::vector<float> f;
  std::vector<double> d;
  for (std::uint32_t i = 0; i < 40; ++i) {
    b.push_back(bf16::from_bits(static_cast<std::uint16_t>(0x3f00u + 37u * i)));
    h.push_back(fp16::from_bits(static_cast<std::uint16_t>(0x3800u + 101u * i)));
    f.push_back(1.0f + std::ldexp(1.0f, -8) * float(i) + std::ldexp(1.0f, -20));
    d.push_back(1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -40) * (i % 2 ? 1 : -1));
  }
  {
    std::vector<dchag::SafetensorsEntry> entries = {
        {"b", "BF16", {40}}, {"h", "F16", {4, 10}}, {"f", "F32", {40}}, {"d", "F64", {40}},
        {"f_as_bf16", "BF16", {40}}};
    dchag::SafetensorsWriter w(path, entries);
    w.write("b", b.data(), b.size());
    w.write("h", h.data(), h.size());
    w.write("f", f.data(), f.size());
    w.write("d", d.data(), d.size());
    w.write("f_as_bf16", f.data(), f.size());  // rounds on writing
    w.commit();
  }
  const auto file = dchag::SafetensorsFile::read(path);
  CHECK(file.info("b").dtype == "BF16");
  CHECK(file.info("h").dtype == "F16");
  CHECK(file.info("b").end - file.info("b").begin == 80);
  {
    // Little-endian raw bits at the tensor's offset.
    std::FILE* raw = std::fopen(path.c_str(), "rb");
    REQUIRE(raw);
    unsigned char len[8];
    REQUIRE(std::fread(len, 1, 8, raw) == 8);
    const std::uint64_t header = dchag::Impl::load_le<std::uint64_t>(len);
    std::fseek(raw, long(8 + header + file.info("b").begin), SEEK_SET);
    unsigned char first[2];
    REQUIRE(std::fread(first, 1, 2, raw) == 2);
    std::fclose(raw);
    CHECK(first[0] == 0x00);
    CHECK(first[1] == 0x3f);
  }
  const auto rb = file.read<bf16>("b");
  const auto rh = file.read<fp16>("h");
  for (std::size_t i = 0; i < 40; ++i) {
    REQUIRE(rb[i].bits == b[i].bits);
    REQUIRE(rh[i].bits == h[i].bits);
  }
  // Any of the four into any of the four.
  const auto bf = file.read<float>("b");
  const auto bd = file.read<double>("b");
  const auto hb = file.read<bf16>("h");
  const auto fb = file.read<bf16>("f");
  const auto fh = file.read<fp16>("f");
  const auto db = file.read<bf16>("d");
  const auto stored = file.read<bf16>("f_as_bf16");
  for (std::size_t i = 0; i < 40; ++i) {
    REQUIRE(bf[i] == float(b[i]));
    REQUIRE(bd[i] == double(float(b[i])));
    REQUIRE(hb[i].bits == bf16(float(h[i])).bits);
    REQUIRE(fb[i].bits == bf16(f[i]).bits);  // F32 into bf16 rounds to nearest even
    REQUIRE(fh[i].bits == fp16(f[i]).bits);
    REQUIRE(stored[i].bits == bf16(f[i]).bits);
  }
  // F64 just above / below a bf16 tie (1 + 2^-8): one rounding. Through float the tie would
  // come first (1 + 2^-8 + 2^-40 is not a float) and round to even (1); the direct rounding
  // goes up on odd i, down on even i.
  for (std::size_t i = 0; i < 40; ++i)
    REQUIRE(float(db[i]) == (i % 2 ? 1.0f + std::ldexp(1.0f, -7) : 1.0f));
  std::remove(path.c_str());
}

namespace {

// A model the checkpoint code accepts, with a parameter list of any scalar: the layers cannot
// be instantiated in 16 bits yet, the file layer and the optimizer state can.
template <class T>
struct ListModel {
  using scalar = T;
  using execution_space = Space;
  struct policy {
    static const char* name() { return "list"; }
    template <class, class>
    struct partial {
      static std::string name() { return "none"; }
    };
  };
  static std::string kind() { return "channel_vit"; }
  Params<T> storage;
  dchag::ModelConfig cfg;
  dchag::ProcessGrid grid_ = dchag::ProcessGrid::single();
  dchag::ParameterList<T, Space> parameters() const { return storage.list(); }
  const dchag::ModelConfig& config() const { return cfg; }
  const dchag::ProcessGrid& grid() const { return grid_; }
};

}  // namespace

TEST_CASE("a bf16 checkpoint holds BF16 weights and F32 moments and master weights") {
  const std::string path = "test_mixed_precision_checkpoint.safetensors";
  Space space;
  ListModel<bf16> model;
  fill(model.storage.w1, [](std::size_t i) { return bf16(weight_of(i)); });
  fill(model.storage.w2, [](std::size_t i) { return bf16(weight_of(500 + i)); });
  dchag::AdamWConfig config;
  config.lr = std::ldexp(1.0, -10);  // master and weights part after a few steps
  dchag::AdamW<bf16, Space> opt(model.parameters(), config);
  for (int step = 0; step < 4; ++step) {
    set_grads(model.storage, step);
    opt.step(space, model.parameters());
  }
  space.fence();
  dchag::save_checkpoint(path, model, &opt, 4);

  const auto file = dchag::SafetensorsFile::read(path);
  CHECK(file.info("blocks.0.weight").dtype == "BF16");
  CHECK(file.info("optimizer.m.blocks.0.weight").dtype == "F32");
  CHECK(file.info("optimizer.v.blocks.0.bias").dtype == "F32");
  CHECK(file.info("optimizer.master.blocks.0.weight").dtype == "F32");
  CHECK(file.metadata().at("scalar") == "BF16");
  CHECK(dchag::read_checkpoint_info(path).scalar == "BF16");

  // Resumes exactly: weights bit for bit, the float master and moments too, and the next step
  // of both optimizers is the same.
  ListModel<bf16> resumed;
  dchag::AdamW<bf16, Space> opt2(config);
  dchag::load_checkpoint(path, resumed, &opt2);
  CHECK(opt2.step_count() == 4);
  for (const char* name : {"blocks.0.weight", "blocks.0.bias"}) {
    const auto a = host(opt.state(name).master), b = host(opt2.state(name).master);
    const auto am = host(opt.state(name).m), bm = host(opt2.state(name).m);
    const auto av = host(opt.state(name).v), bv = host(opt2.state(name).v);
    for (std::size_t i = 0; i < a.size(); ++i) {
      REQUIRE(a(i) == b(i));
      REQUIRE(am(i) == bm(i));
      REQUIRE(av(i) == bv(i));
    }
  }
  bool master_differs = false;
  {
    const auto w = host(model.storage.w1), w2 = host(resumed.storage.w1);
    const auto master = host(opt.state("blocks.0.weight").master);
    for (std::size_t i = 0; i < w.size(); ++i) {
      REQUIRE(w(i).bits == w2(i).bits);
      master_differs = master_differs || float(w(i)) != master(i);
    }
  }
  CHECK(master_differs);  // the master is information the bf16 weights do not hold
  set_grads(model.storage, 4);
  set_grads(resumed.storage, 4);
  opt.step(space, model.parameters());
  opt2.step(space, resumed.parameters());
  {
    const auto w = host(model.storage.w1), w2 = host(resumed.storage.w1);
    for (std::size_t i = 0; i < w.size(); ++i) REQUIRE(w(i).bits == w2(i).bits);
  }

  // Across precisions: the weights convert (exactly, bf16 into float), an optimizer is refused.
  ListModel<float> wide;
  dchag::load_checkpoint(path, wide);
  {
    const auto w = host(wide.storage.w2);
    const auto src = file.read<bf16>("blocks.0.bias");
    for (std::size_t i = 0; i < w.size(); ++i) REQUIRE(w(i) == float(src[i]));
  }
  dchag::AdamW<float, Space> float_opt;
  CHECK_THROWS_WITH_AS(dchag::load_checkpoint(path, wide, &float_opt),
                       doctest::Contains("of a BF16 model, the optimizer given is of a F32"),
                       dchag::Error);
  const std::string float_path = "test_mixed_precision_float.safetensors";
  dchag::AdamW<float, Space> float_state(wide.parameters());
  dchag::save_checkpoint(float_path, wide, &float_state, 0);
  ListModel<bf16> narrow;
  dchag::load_checkpoint(float_path, narrow);  // float weights round into bf16
  CHECK(host(narrow.storage.w2)(3).bits == bf16(host(wide.storage.w2)(3)).bits);
  dchag::AdamW<bf16, Space> bf16_opt;
  CHECK_THROWS_WITH_AS(dchag::load_checkpoint(float_path, narrow, &bf16_opt),
                       doctest::Contains("of a F32 model, the optimizer given is of a BF16"),
                       dchag::Error);
  std::remove(path.c_str());
  std::remove(float_path.c_str());
}

TEST_CASE("the optimizer loop of an fp16 model skips overflowing steps and unscales the others") {
  Space space;
  Params<fp16> p;
  fill(p.w1, [](std::size_t) { return fp16(1.0f); });
  fill(p.w2, [](std::size_t) { return fp16(1.0f); });
  dchag::TrainConfig config;
  config.warmup_steps = 0;
  config.steps = 10;
  config.lr = 1e-3;
  config.min_lr = 1e-3;
  dchag::Impl::OptimizerLoop<fp16, Space> loop(p.list(), config);
  const auto grid = dchag::ProcessGrid::single();
  CHECK(loop.loss_scale() == 65536.0);

  // Gradients of 2^-20 (an fp16 subnormal would flush it) arrive scaled: 2^-4.
  auto r = loop.begin(space);
  fill(p.g1, [](std::size_t) { return fp16(0.0625f); });
  fill(p.g2, [](std::size_t) { return fp16(0.0625f); });
  r.loss = 1.0;
  loop.finish(space, grid, 1, 0.0, r);
  CHECK_FALSE(r.skipped);
  CHECK(r.grad_norm == doctest::Approx(std::ldexp(1.0, -20) * std::sqrt(307.0)));
  CHECK(float(host(p.w2)(0)) < 1.0f);  // a first AdamW step: by lr
  const float after_one = float(host(p.w2)(0));

  r = loop.begin(space);
  fill(p.g2, [](std::size_t i) {
    return i == 1 ? fp16(std::numeric_limits<float>::infinity()) : fp16(0.0625f);
  });
  r.loss = 1.0;
  loop.finish(space, grid, 1, 0.0, r);
  CHECK(r.skipped);
  CHECK(loop.loss_scale() == 32768.0);
  CHECK(float(host(p.w2)(0)) == after_one);  // nothing moved

  // bf16: no scaling, the loop as for float.
  Params<bf16> b;
  dchag::Impl::OptimizerLoop<bf16, Space> bloop(b.list(), config);
  CHECK(bloop.loss_scale() == 1.0);
  auto rb = bloop.begin(space);
  fill(b.g1, [](std::size_t) { return bf16(0.5f); });
  rb.loss = 1.0;
  bloop.finish(space, grid, 1, 0.0, rb);
  CHECK_FALSE(rb.skipped);
  CHECK(float(host(b.w1)(0)) != 0.0f);
}
