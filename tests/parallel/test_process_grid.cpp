#include <dchag/core/error.hpp>
#include <dchag/parallel/process_grid.hpp>

#include <array>
#include <string>
#include <vector>

#include "test_common.hpp"

namespace {
// doctest::Contains takes a C string; this one takes what the test computed.
doctest::Contains contains(const std::string& text) {
  return doctest::Contains(text.c_str());
}
}  // namespace

namespace {

// World ranks of the members of `comm`, in its rank order.
std::vector<int> members(const dchag::Communicator& comm, int world_rank) {
  std::vector<int> out(comm.size());
  MPI_Allgather(&world_rank, 1, MPI_INT, out.data(), 1, MPI_INT, comm.get());
  return out;
}

void check_grid(const dchag::Communicator& world, int tp, int fsdp, int dp) {
  CAPTURE(tp);
  CAPTURE(fsdp);
  CAPTURE(dp);
  const dchag::ProcessGrid grid(world, tp, fsdp, dp);
  const int r = world.rank();
  CHECK(grid.tp() == tp);
  CHECK(grid.fsdp() == fsdp);
  CHECK(grid.dp() == dp);
  CHECK(grid.size() == world.size());
  CHECK(grid.world().size() == world.size());
  // TP fastest, then FSDP, then DP.
  CHECK(grid.tp_rank() == r % tp);
  CHECK(grid.fsdp_rank() == (r / tp) % fsdp);
  CHECK(grid.dp_rank() == r / (tp * fsdp));
  CHECK(grid.world_rank() == r);
  CHECK((grid.dp_rank() * fsdp + grid.fsdp_rank()) * tp + grid.tp_rank() == r);

  CHECK(grid.tp_comm().size() == tp);
  CHECK(grid.fsdp_comm().size() == fsdp);
  CHECK(grid.dp_comm().size() == dp);
  CHECK(grid.tp_comm().rank() == grid.tp_rank());
  CHECK(grid.fsdp_comm().rank() == grid.fsdp_rank());
  CHECK(grid.dp_comm().rank() == grid.dp_rank());

  // Each group holds exactly the ranks that differ from this one in its own coordinate only,
  // in coordinate order.
  const int t = grid.tp_rank(), f = grid.fsdp_rank(), d = grid.dp_rank();
  auto rank_of = [&](int ti, int fi, int di) { return (di * fsdp + fi) * tp + ti; };
  const auto tp_members = members(grid.tp_comm(), r);
  for (int k = 0; k < tp; ++k) CHECK(tp_members[k] == rank_of(k, f, d));
  const auto fsdp_members = members(grid.fsdp_comm(), r);
  for (int k = 0; k < fsdp; ++k) CHECK(fsdp_members[k] == rank_of(t, k, d));
  const auto dp_members = members(grid.dp_comm(), r);
  for (int k = 0; k < dp; ++k) CHECK(dp_members[k] == rank_of(t, f, k));
  // TP neighbours are consecutive world ranks (one node).
  for (int k = 1; k < tp; ++k) CHECK(tp_members[k] == tp_members[k - 1] + 1);
  // The data-parallel ranks (dp x fsdp) of this TP rank, in (dp, fsdp) order: part k of the batch.
  CHECK(grid.data_size() == dp * fsdp);
  CHECK(grid.data_rank() == d * fsdp + f);
  CHECK(grid.data_comm().size() == dp * fsdp);
  CHECK(grid.data_comm().rank() == grid.data_rank());
  const auto data_members = members(grid.data_comm(), r);
  for (int k = 0; k < dp * fsdp; ++k) CHECK(data_members[k] == rank_of(t, k % fsdp, k / fsdp));
}

}  // namespace

TEST_CASE("ProcessGrid: every factorisation of the world size, TP fastest") {
  const dchag::Communicator world;
  const int p = world.size();
  int grids = 0;
  for (int tp = 1; tp <= p; ++tp)
    for (int fsdp = 1; fsdp <= p; ++fsdp)
      for (int dp = 1; dp <= p; ++dp)
        if (tp * fsdp * dp == p) {
          check_grid(world, tp, fsdp, dp);
          ++grids;
        }
  // 1 rank: 1 grid; 2 ranks: 3; 4 ranks: 6 (4x1x1, 1x4x1, 1x1x4, 2x2x1, 2x1x2, 1x2x2).
  CHECK(grids == (p == 1 ? 1 : p == 2 ? 3 : p == 4 ? 6 : grids));
}

TEST_CASE("ProcessGrid defaults and the single-rank grid") {
  const dchag::Communicator world;
  const dchag::ProcessGrid tp_only(world, world.size());
  CHECK(tp_only.fsdp() == 1);
  CHECK(tp_only.dp() == 1);
  CHECK(tp_only.tp_rank() == world.rank());

  const dchag::ProcessGrid one = dchag::ProcessGrid::single();
  CHECK(one.size() == 1);
  CHECK(one.tp() * one.fsdp() * one.dp() == 1);
  CHECK(one.tp_rank() + one.fsdp_rank() + one.dp_rank() == 0);
  CHECK(one.tp_comm().size() == 1);
  CHECK(one.fsdp_comm().size() == 1);
  CHECK(one.dp_comm().size() == 1);
  CHECK(one.world().size() == 1);
  CHECK(one.describe() == "dp x fsdp x tp = 1 x 1 x 1");
}

TEST_CASE("ProcessGrid refuses bad sizes on every rank, with the numbers") {
  const dchag::Communicator world;
  const int p = world.size();
  const std::string size_text = "world size is " + std::to_string(p);

  // Product larger than the world.
  CHECK_THROWS_WITH_AS(dchag::ProcessGrid(world, p, 2, 1),
                       contains("1 x 2 x " + std::to_string(p)), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::ProcessGrid(world, p, 2, 1), contains(size_text),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::ProcessGrid(world, p + 1, 1, 3),
                       contains("tp = " + std::to_string(p + 1) + ", fsdp = 1, dp = 3"),
                       dchag::Error);
  if (p > 1) {
    // Product smaller than the world.
    CHECK_THROWS_WITH_AS(dchag::ProcessGrid(world, 1), contains(size_text),
                         dchag::Error);
  }
  // Zero and negative sizes.
  CHECK_THROWS_WITH_AS(dchag::ProcessGrid(world, 0), doctest::Contains("must be positive"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::ProcessGrid(world, p, 0, 1),
                       doctest::Contains("fsdp = 0"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::ProcessGrid(world, -p, 1, -1),
                       contains("tp = " + std::to_string(-p)), dchag::Error);

  if (p > 1) {
    // Ranks that disagree (each grid valid on its own) fail together instead of hanging.
    const int r = world.rank();
    CHECK_THROWS_WITH_AS(dchag::ProcessGrid(world, r == 0 ? p : 1, r == 0 ? 1 : p),
                         doctest::Contains("differs between ranks"), dchag::Error);
  }
  // The world still works afterwards.
  const dchag::ProcessGrid grid(world, p);
  CHECK(grid.tp() == p);
}

TEST_CASE("even_range splits n items into equal contiguous parts") {
  for (int parts : {1, 2, 3, 4, 6, 12}) {
    std::size_t next = 0;
    for (int i = 0; i < parts; ++i) {
      const auto [begin, end] = dchag::even_range(12, parts, i);
      CHECK(begin == next);
      CHECK(end - begin == 12u / parts);
      next = end;
    }
    CHECK(next == 12u);
  }
  CHECK(dchag::even_range(0, 4, 3).size() == 0u);
  CHECK(dchag::even_range(80, 4, 2).begin == 40u);

  CHECK_THROWS_WITH_AS(dchag::even_range(10, 4, 0), doctest::Contains("n = 10"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::even_range(10, 4, 0), doctest::Contains("parts = 4"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::even_range(10, 0, 0), doctest::Contains("parts = 0"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::even_range(12, 4, 4), doctest::Contains("[0, 4)"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::even_range(12, 4, -1), doctest::Contains("index -1"),
                       dchag::Error);
}
