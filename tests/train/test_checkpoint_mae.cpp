// Checkpoints of a masked autoencoder on one rank: a ChannelMAE saved after k steps and loaded
// into a fresh model and trainer continues with exactly the losses of the uninterrupted run;
// the file records the kind of model and the autoencoder's definition; and a checkpoint of a
// ChannelViT is refused by a ChannelMAE (and the reverse), as is one of another decoder.
#include <dchag/model/channel_vit.hpp>
#include <dchag/model/mae.hpp>
#include <dchag/train/checkpoint.hpp>
#include <dchag/train/mae_trainer.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "test_common.hpp"

using namespace dchag_test;

namespace {

namespace fs = std::filesystem;
using Space = Kokkos::DefaultExecutionSpace;
using T = double;
using Mae = dchag::ChannelMAE<T, Space>;

dchag::ModelConfig mae_model() {
  dchag::ModelConfig c;
  c.channels = 8;
  c.height = c.width = 8;
  c.patch = 2;
  c.dim = 8;
  c.depth = 1;
  c.heads = 2;
  c.levels = {4, 1};
  c.lead_time = false;
  c.seed = 3;
  return c;
}

dchag::MaeConfig mae_decoder() {
  dchag::MaeConfig m;
  m.decoder_dim = 8;
  m.decoder_depth = 1;
  m.decoder_heads = 2;
  m.decoder_mlp_ratio = 2.5;  // a fractional ratio: hidden int(8 * 2.5) = 20
  return m;
}

dchag::TrainConfig train_config() {
  dchag::TrainConfig t;
  t.steps = 8;
  t.lr = 5e-3;
  t.warmup_steps = 2;
  t.weight_decay = 1e-2;
  return t;
}

// A directory of this process, removed at the end.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "dchag_test_mae_checkpoint_XXXXXX").string();
    const char* made = mkdtemp(&tmpl[0]);
    REQUIRE(made != nullptr);
    path = made;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

// The batch of step s: fixed scenes per step, as a data loader drawing from a seed.
dchag::View4<T, Space> batch(const dchag::ModelConfig& c, int s) {
  dchag::View4<T, Space> x("x", 2, c.channels, c.height, c.width);
  fill_random(x, 100 + std::uint64_t(s));
  return x;
}

}  // namespace

TEST_CASE("a ChannelMAE resumed from a checkpoint continues the uninterrupted run exactly") {
  Space space;
  TempDir dir;
  const std::string path = dir.file("mae.safetensors");
  const auto cfg = mae_model();
  const auto mc = mae_decoder();
  const auto tc = train_config();
  const int k = 3;

  Mae a(cfg, mc);
  dchag::MaeTrainer<Mae> trainer_a(a, tc);
  std::vector<double> losses;
  for (int s = 0; s < 2 * k; ++s) {
    if (s == k) dchag::save_checkpoint(path, a, &trainer_a.optimizer(), trainer_a.step_count());
    losses.push_back(trainer_a.step(space, batch(cfg, s)).loss);
  }

  const auto info = dchag::read_checkpoint_info(path);
  CHECK(info.model == "channel_mae");
  CHECK(info.step == k);
  CHECK(info.has_optimizer);
  CHECK(info.config.describe() == cfg.describe());
  CHECK(info.mae.describe() == mc.describe());
  CHECK(info.metadata.at("mae") == mc.describe());
  CHECK(info.mae.decoder_mlp_ratio == 2.5);
  CHECK(info.metadata.at("mae.decoder_mlp_ratio") == "2.5");

  // A fresh model (of the same seed: it draws the masks) and trainer pick up at step k.
  Mae b(info.config, info.mae);
  dchag::MaeTrainer<Mae> trainer_b(b, tc);
  const auto loaded = dchag::load_checkpoint(path, b, &trainer_b.optimizer());
  trainer_b.set_step_count(loaded.step);
  CHECK(trainer_b.optimizer().step_count() == k);
  for (int s = k; s < 2 * k; ++s) {
    CAPTURE(s);
    CHECK(trainer_b.step(space, batch(cfg, s)).loss == losses[s]);
  }
  const auto pa = a.parameters(), pb = b.parameters();
  REQUIRE(pa.size() == pb.size());
  for (std::size_t i = 0; i < pa.size(); ++i) {
    CAPTURE(pa[i].name);
    const auto ha = to_host(pa[i].value), hb = to_host(pb[i].value);
    CHECK(std::vector<double>(ha.data(), ha.data() + ha.size()) ==
          std::vector<double>(hb.data(), hb.data() + hb.size()));
  }
}

TEST_CASE("a checkpoint of one kind of model is refused by the other, and by another decoder") {
  TempDir dir;
  auto cfg = mae_model();
  Mae mae(cfg, mae_decoder());
  const std::string mae_file = dir.file("mae.safetensors");
  dchag::save_checkpoint(mae_file, mae, 0);

  dchag::ChannelViT<T, Space> vit(cfg);
  const std::string vit_file = dir.file("vit.safetensors");
  dchag::save_checkpoint(vit_file, vit, 0);
  CHECK(dchag::read_checkpoint_info(vit_file).model == "channel_vit");

  CHECK_THROWS_WITH_AS(dchag::load_checkpoint(mae_file, vit),
                       doctest::Contains("holds a channel_mae model, which cannot be loaded into "
                                         "a channel_vit"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::load_checkpoint(vit_file, mae),
                       doctest::Contains("holds a channel_vit model, which cannot be loaded into "
                                         "a channel_mae"),
                       dchag::Error);

  auto wider = mae_decoder();
  wider.decoder_dim = 12;
  wider.decoder_heads = 3;
  Mae other(cfg, wider);
  CHECK_THROWS_WITH_AS(dchag::load_checkpoint(mae_file, other),
                       doctest::Contains("mae.decoder_dim = 8 in the file, 12 in the model"),
                       dchag::Error);
  auto fewer = mae_decoder();
  fewer.mask_ratio = 0.25;
  Mae masked(cfg, fewer);
  CHECK_THROWS_WITH_AS(dchag::load_checkpoint(mae_file, masked),
                       doctest::Contains("mae.mask_ratio = 0.75 in the file, 0.25 in the model"),
                       dchag::Error);
}
