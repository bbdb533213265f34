// A partial aggregator and a partitioning policy written by a user, against the documented
// concepts only (aggregation/aggregator.hpp, parallel/policy.hpp) and outside the library's
// headers: they must work in the model on every grid, in the checkpoints and in the gradient
// checks, like the library's own.
#include <dchag/aggregation/aggregator.hpp>
#include <dchag/core/init.hpp>
#include <dchag/core/random.hpp>
#include <dchag/model/channel_vit.hpp>
#include <dchag/parallel/policy.hpp>
#include <dchag/train/checkpoint.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "concepts/incomplete_types.hpp"
#include "forecast_invariance.hpp"
#include "gradcheck.hpp"
#include "test_common.hpp"

using namespace dchag_test;

namespace user {

// Each group's token is its channels' mean times a learned scale:
//   out[g, n, :] = s[g] / Gs * sum_c T[g*Gs + c, n, :].
template <class T, class ExecSpace>
class ScaledMean {
 public:
  using tensor = dchag::View3<T, ExecSpace>;
  using vector = dchag::View1<T, ExecSpace>;
  using input = dchag::ConstTensor3<T, ExecSpace>;

  ScaledMean() = default;
  ScaledMean(std::string prefix, int groups, int group_size, int dim, int /*heads*/,
             int group_begin)
      : prefix_(std::move(prefix)), groups_(groups), gs_(group_size), dim_(dim),
        begin_(group_begin), scale_(prefix_ + ".scale", groups), grad_(prefix_ + ".grad", groups) {}

  void init(std::uint64_t seed, double /*std*/) {
    for (int g = 0; g < groups_; ++g)
      dchag::uniform(Kokkos::subview(scale_, Kokkos::make_pair(g, g + 1)), seed,
                     dchag::stream_id(name_of(g)), 0.5, 1.5);
  }

  tensor forward(const ExecSpace& space, const input& x) {
    if (x.extent(0) != std::size_t(groups_) * gs_ || x.extent(2) != std::size_t(dim_))
      throw std::invalid_argument("ScaledMean: input of the wrong shape");
    x_ = x;
    const std::size_t N = x.extent(1);
    if (out_.extent(1) != N) out_ = tensor(prefix_ + ".out", groups_, N, dim_);
    const auto y = out_;
    const auto s = scale_;
    const int gs = gs_;
    const std::int64_t ND = std::int64_t(N) * dim_, D = dim_;
    Kokkos::parallel_for(
        "ScaledMean::forward", Kokkos::RangePolicy<ExecSpace>(space, 0, y.size()),
        KOKKOS_LAMBDA(std::int64_t e) {
          const std::int64_t g = e / ND, n = (e % ND) / D, d = e % D;
          T sum = 0;
          for (int c = 0; c < gs; ++c) sum += x(g * gs + c, n, d);
          y(g, n, d) = s(g) * sum / T(gs);
        });
    return out_;
  }

  tensor backward(const ExecSpace& space, const input& dy, bool input_grad) {
    const auto x = x_;
    const auto s = scale_;
    const auto gr = grad_;
    const int gs = gs_;
    const std::int64_t N = dy.extent(1), D = dim_, per_group = std::int64_t(gs) * N * D;
    for (int g = 0; g < groups_; ++g) {
      T sum_xy = 0;
      Kokkos::parallel_reduce(
          "ScaledMean::dscale", Kokkos::RangePolicy<ExecSpace>(space, 0, per_group),
          KOKKOS_LAMBDA(std::int64_t e, T & acc) {
            const std::int64_t c = e / (N * D), n = (e % (N * D)) / D, d = e % D;
            acc += dy(g, n, d) * x(g * gs + c, n, d);
          },
          sum_xy);
      Kokkos::parallel_for(
          "ScaledMean::accumulate", Kokkos::RangePolicy<ExecSpace>(space, 0, 1),
          KOKKOS_LAMBDA(int) { gr(g) += sum_xy / T(gs); });
    }
    if (!input_grad) return tensor();
    if (dx_.extent(1) != std::size_t(N)) dx_ = tensor(prefix_ + ".dx", x.extent(0), N, D);
    const auto dx = dx_;
    Kokkos::parallel_for(
        "ScaledMean::dx", Kokkos::RangePolicy<ExecSpace>(space, 0, dx.size()),
        KOKKOS_LAMBDA(std::int64_t e) {
          const std::int64_t c = e / (N * D), n = (e % (N * D)) / D, d = e % D;
          dx(c, n, d) = s(c / gs) / T(gs) * dy(c / gs, n, d);
        });
    return dx_;
  }

  void parameters(dchag::ParameterList<T, ExecSpace>& list) const {
    for (int g = 0; g < groups_; ++g)
      list.push_back({name_of(g), {1}, dchag::Unmanaged<T*, ExecSpace>(scale_.data() + g, 1),
                      dchag::Unmanaged<T*, ExecSpace>(grad_.data() + g, 1), false});
  }

  template <class F>
  void visit_storage(F&& f) {
    f(scale_, grad_);
  }

  double flops(std::size_t rows) const { return double(groups_) * gs_ * rows * dim_; }

  static const char* name() { return "scaled_mean"; }

 private:
  std::string name_of(int g) const { return prefix_ + "." + std::to_string(begin_ + g) + ".scale"; }

  std::string prefix_;
  int groups_ = 0, gs_ = 0, dim_ = 0, begin_ = 0;
  vector scale_, grad_;
  input x_;
  tensor out_, dx_;
};

// D-CHAG where the channels split into whole groups over the tensor-parallel ranks, the
// replicated baseline where they do not: one program for every grid.
template <template <class, class> class Partial>
struct DistributeWhereDivisible {
  template <class T, class ExecSpace>
  using partial = Partial<T, ExecSpace>;
  static dchag::IndexRange owned_channels(const dchag::ChannelLayout& layout,
                                          const dchag::ProcessGrid& grid) {
    const int tp = grid.tp(), C = layout.channels;
    if (C % tp != 0 || (C / tp) % layout.channels_per_key() != 0)
      return {0, std::size_t(C)};
    const std::size_t part = std::size_t(C / tp);
    return {part * grid.tp_rank(), part * (grid.tp_rank() + 1)};
  }
  static const char* name() { return "distribute where divisible"; }
};

// Every rank claims the first half: not a tiling.
struct FirstHalf {
  template <class T, class ExecSpace>
  using partial = dchag::LinearAggregator<T, ExecSpace>;
  static dchag::IndexRange owned_channels(const dchag::ChannelLayout& l,
                                          const dchag::ProcessGrid&) {
    return {0, std::size_t(l.channels / 2)};
  }
  static const char* name() { return "first half"; }
};

// Rank 0 owns channel 0 alone, the others share the rest: a tiling, but not of whole groups
// when the groups hold more than one channel.
struct OneChannelFirst {
  template <class T, class ExecSpace>
  using partial = dchag::LinearAggregator<T, ExecSpace>;
  static dchag::IndexRange owned_channels(const dchag::ChannelLayout& l,
                                          const dchag::ProcessGrid& g) {
    if (g.tp_rank() == 0) return {0, 1};
    const auto r = dchag::balanced_range(std::size_t(l.channels - 1), g.tp() - 1, g.tp_rank() - 1);
    return {r.begin + 1, r.end + 1};
  }
  static const char* name() { return "one channel first"; }
};

// Throws on one rank only.
struct ThrowsOnRankOne {
  template <class T, class ExecSpace>
  using partial = dchag::LinearAggregator<T, ExecSpace>;
  static dchag::IndexRange owned_channels(const dchag::ChannelLayout& l,
                                          const dchag::ProcessGrid& g) {
    if (g.tp_rank() == 1) throw std::runtime_error("no channels for rank one");
    return {0, std::size_t(l.channels)};
  }
  static const char* name() { return "throws on rank one"; }
};

}  // namespace user

// The traits see what is there and what is not.
static_assert(dchag::is_partial_aggregator<dchag::LinearAggregator<double, Space>, double,
                                           Space>::value);
static_assert(dchag::is_partial_aggregator<dchag::CrossAttentionAggregator<float, Space>, float,
                                           Space>::value);
static_assert(dchag::is_partial_aggregator<user::ScaledMean<double, Space>, double, Space>::value);
using NoFlops = incomplete::NoFlops<double, Space>;
static_assert(!dchag::is_partial_aggregator<NoFlops, double, Space>::value);
static_assert(!dchag::Impl::AggregatorMembers<NoFlops, double, Space>::flops);
static_assert(dchag::Impl::AggregatorMembers<NoFlops, double, Space>::forward);
static_assert(dchag::is_partitioning_policy<dchag::TensorParallel, double, Space>::value);
static_assert(dchag::is_partitioning_policy<dchag::DistributedChannels<user::ScaledMean>, double,
                                            Space>::value);
static_assert(dchag::is_partitioning_policy<user::DistributeWhereDivisible<user::ScaledMean>,
                                            double, Space>::value);
static_assert(!dchag::is_partitioning_policy<incomplete::NoOwnership, double, Space>::value);
static_assert(!dchag::is_partitioning_policy<dchag::DistributedChannels<incomplete::NoFlops>,
                                             double, Space>::value);

namespace {

dchag::ModelConfig user_config(std::vector<int> levels, int channels = 8) {
  dchag::ModelConfig c;
  c.channels = channels;
  c.height = 8;
  c.width = 8;
  c.patch = 4;
  c.dim = 8;
  c.depth = 1;
  c.heads = 4;
  c.decoder_depth = 1;
  c.levels = std::move(levels);
  c.seed = 11;
  return c;
}

std::string scratch(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / "dchag_user_extensions";
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

}  // namespace

TEST_CASE("a user's aggregator: backward matches finite differences") {
  if (dchag::Communicator().rank() != 0) return;
  using T = double;
  Space space;
  user::ScaledMean<T, Space> agg("agg.0", 3, 4, 5, 1, 2);
  agg.init(3, 0.02);
  dchag::View3<T, Space> x("x", 12, 6, 5), r("r", 3, 6, 5);
  fill_random(x, 1);
  fill_random(r, 2);
  const dchag::ConstTensor3<T, Space> cx(x.data(), 12, 6, 5);
  auto loss = [&] { return dot(agg.forward(space, cx), r); };
  loss();
  dchag::ParameterList<T, Space> params;
  agg.parameters(params);
  REQUIRE(params.size() == 3);
  CHECK(params[0].name == "agg.0.2.scale");
  const dchag::ConstTensor3<T, Space> dr(r.data(), 3, 6, 5);
  auto dx = agg.backward(space, dr, true);
  for (const auto& p : params) CHECK(gradient_error(p.value, p.grad, loss) < 1e-7);
  CHECK(gradient_error(x, dx, loss) < 1e-7);
}

TEST_CASE("a user's aggregator trains the same function on every grid") {
  check_all_grids<dchag::DistributedChannels<user::ScaledMean>>(user_config({4, 1}));
  check_all_grids<dchag::ReplicatedChannels<user::ScaledMean>>(user_config({2, 1}));
}

TEST_CASE("a user's policy trains the same function on every grid, whichever way it splits") {
  // 8 channels in groups of 2: distributed on 1, 2 and 4 TP ranks.
  check_all_grids<user::DistributeWhereDivisible<dchag::LinearAggregator>>(user_config({4, 1}));
  // 12 channels in groups of 6: distributed on 2 TP ranks, replicated on 4.
  check_all_grids<user::DistributeWhereDivisible<user::ScaledMean>>(user_config({2, 1}, 12));
}

TEST_CASE("a user's aggregator and policy are saved and loaded by the checkpoints") {
  using T = double;
  using Policy = user::DistributeWhereDivisible<user::ScaledMean>;
  const dchag::Communicator world;
  const auto cfg = user_config({4, 1});
  const dchag::ProcessGrid grid(world, world.size(), 1, 1);
  dchag::ChannelViT<T, Space, Policy> saved(cfg, grid);
  const std::string path = scratch("user_" + std::to_string(world.size()) + ".safetensors");
  dchag::save_checkpoint(path, saved, 5);
  const auto info = dchag::read_checkpoint_info(path);
  CHECK(info.aggregator == "scaled_mean");
  CHECK(info.metadata.at("policy") == Policy::name());
  // Another seed, one rank: the loaded model holds the saved weights.
  auto other = cfg;
  other.seed = 99;
  dchag::ChannelViT<T, Space, Policy> loaded(other, dchag::ProcessGrid::single());
  CHECK(dchag::load_checkpoint(path, loaded).step == 5);
  Run a, b;
  const auto pa = saved.parameters(), pb = loaded.parameters();
  record_parameters(pa, a);
  record_parameters(pb, b);
  for (const auto& p : pa) {
    CAPTURE(p.name);
    CHECK(pieces_of(b.params.at(p.name), p.shape, p.pieces) == a.params.at(p.name));
  }
  // The library's D-CHAG-L cannot take it: another aggregator.
  dchag::ChannelViT<T, Space, dchag::DistributedChannels<dchag::LinearAggregator>> linear(
      cfg, dchag::ProcessGrid::single());
  CHECK_THROWS_WITH_AS(dchag::load_checkpoint(path, linear), doctest::Contains("scaled_mean"),
                       dchag::Error);
}

TEST_CASE("a policy whose split the model cannot run is refused on every rank") {
  const dchag::Communicator world;
  if (world.size() < 2) return;
  // Every rank claims the first half: not a tiling.
  const dchag::ProcessGrid grid(world, world.size(), 1, 1);
  using Model = dchag::ChannelViT<double, Space, user::FirstHalf>;
  CHECK_THROWS_WITH_AS(Model(user_config({4, 1}), grid),
                       doctest::Contains("consecutive parts"), dchag::Error);
  // Consecutive parts of any size, but each of whole groups (of 2 channels here).
  using Straddling = dchag::ChannelViT<double, Space, user::OneChannelFirst>;
  CHECK_THROWS_WITH_AS(Straddling(user_config({4, 1}), grid),
                       doctest::Contains("rank 0 owns channels [0, 1), which do not cover whole "
                                         "groups of 2"),
                       dchag::Error);
  // One rank's policy throws: every rank gets its message, nobody waits.
  using Throwing = dchag::ChannelViT<double, Space, user::ThrowsOnRankOne>;
  CHECK_THROWS_WITH_AS(Throwing(user_config({4, 1}), grid),
                       doctest::Contains("no channels for rank one"), dchag::Error);
  CHECK(dchag::all_reduce_sum(world, 1.0) == double(world.size()));
}
