#ifndef DCHAG_PARALLEL_PROCESS_GRID_HPP
#define DCHAG_PARALLEL_PROCESS_GRID_HPP

// dchag::ProcessGrid: the world cut into dp x fsdp x tp ranks.
//
// TP is the fastest-varying coordinate, world rank = (dp_rank * fsdp + fsdp_rank) * tp + tp_rank,
// so that with ranks placed node by node the TP group (the one that communicates every layer)
// stays on one node, FSDP next, and DP (one gradient reduction per step) spans nodes.
// One rank is simply the 1 x 1 x 1 grid: there is no separate serial code path.

#include <cstddef>
#include <string>

#include <dchag/core/error.hpp>
#include <dchag/parallel/agreement.hpp>
#include <dchag/parallel/communicator.hpp>

namespace dchag {

// [begin, end) of one part; usable with structured bindings: auto [b, e] = even_range(...).
struct IndexRange {
  std::size_t begin;
  std::size_t end;
  std::size_t size() const { return end - begin; }
};

// Part `index` of n items (heads, hidden units) cut into `parts` equal contiguous
// parts. Uneven splits are refused rather than balanced where the parts are layers' shapes
// (a head or a hidden unit cannot be shared between ranks); channels use balanced_range below.
inline IndexRange even_range(std::size_t n, int parts, int index) {
  Impl::require(parts > 0, "dchag::even_range: cannot split n = ", n, " items into parts = ",
                parts, " parts");
  Impl::require(n % static_cast<std::size_t>(parts) == 0, "dchag::even_range: n = ", n,
                " items do not split evenly into parts = ", parts, " parts (", n, " % ", parts,
                " = ", n % static_cast<std::size_t>(parts), ")");
  Impl::require(index >= 0 && index < parts, "dchag::even_range: part index ", index,
                " is outside [0, ", parts, ") (n = ", n, ")");
  const std::size_t chunk = n / static_cast<std::size_t>(parts);
  const std::size_t begin = chunk * static_cast<std::size_t>(index);
  return {begin, begin + chunk};
}

// Part `index` of n items cut into `parts` contiguous parts as equal as they can be: the first
// n % parts parts take one item more. How D-CHAG spreads the channel groups over the
// tensor-parallel ranks (parallel/policies.hpp): which rank computes a group changes nothing in
// the function the model computes, so an uneven split is a load imbalance, not another model.
// Parts are empty when n < parts.
inline IndexRange balanced_range(std::size_t n, int parts, int index) {
  Impl::require(parts > 0, "dchag::balanced_range: cannot split n = ", n,
                " items into parts = ", parts, " parts");
  Impl::require(index >= 0 && index < parts, "dchag::balanced_range: part index ", index,
                " is outside [0, ", parts, ") (n = ", n, ")");
  const std::size_t p = static_cast<std::size_t>(parts), i = static_cast<std::size_t>(index);
  const std::size_t chunk = n / p, extra = n % p;
  const std::size_t begin = chunk * i + (i < extra ? i : extra);
  return {begin, begin + chunk + (i < extra ? 1 : 0)};
}

class ProcessGrid {
 public:
  // Collective over world. Every rank must pass the same sizes; this is checked first (a
  // collective every rank enters), then the sizes are validated, so a bad grid throws the
  // same dchag::Error on every rank before any communicator split could hang.
  ProcessGrid(const Communicator& world, int tp, int fsdp = 1, int dp = 1)
      : m_world(world), m_tp(tp), m_fsdp(fsdp), m_dp(dp) {
    const int world_size = m_world.size();
    check_agreement(m_world, "the process grid (dchag::ProcessGrid sizes)",
                    Impl::concat("tp = ", tp, ", fsdp = ", fsdp, ", dp = ", dp));
    Impl::require(tp > 0 && fsdp > 0 && dp > 0,
                  "dchag::ProcessGrid: sizes must be positive, got tp = ", tp, ", fsdp = ", fsdp,
                  ", dp = ", dp, " (world size ", world_size, ")");
    // In long long: three ints can overflow int but not this.
    const long long product = static_cast<long long>(tp) * fsdp * dp;
    Impl::require(product == world_size, "dchag::ProcessGrid: dp x fsdp x tp = ", dp, " x ",
                  fsdp, " x ", tp, " = ", product, " ranks, but the world size is ",
                  world_size, " (tp = ", tp, ", fsdp = ", fsdp, ", dp = ", dp, ")");

    const int r = m_world.rank();
    m_tp_rank = r % tp;
    m_fsdp_rank = (r / tp) % fsdp;
    m_dp_rank = r / (tp * fsdp);
    // Colour = the other two coordinates, key = own coordinate: rank order inside each group
    // is the coordinate itself.
    m_tp_comm = m_world.split(m_dp_rank * fsdp + m_fsdp_rank, m_tp_rank);
    m_fsdp_comm = m_world.split(m_dp_rank * tp + m_tp_rank, m_fsdp_rank);
    m_dp_comm = m_world.split(m_fsdp_rank * tp + m_tp_rank, m_dp_rank);
    m_data_comm = m_world.split(m_tp_rank, data_rank());
  }

  // The 1 x 1 x 1 grid of this rank alone (a duplicate of MPI_COMM_SELF); not collective.
  static ProcessGrid single() { return ProcessGrid(Communicator(MPI_COMM_SELF), 1, 1, 1); }

  int tp() const { return m_tp; }
  int fsdp() const { return m_fsdp; }
  int dp() const { return m_dp; }
  int size() const { return m_tp * m_fsdp * m_dp; }

  int tp_rank() const { return m_tp_rank; }
  int fsdp_rank() const { return m_fsdp_rank; }
  int dp_rank() const { return m_dp_rank; }
  int world_rank() const { return (m_dp_rank * m_fsdp + m_fsdp_rank) * m_tp + m_tp_rank; }

  const Communicator& world() const { return m_world; }
  const Communicator& tp_comm() const { return m_tp_comm; }
  const Communicator& fsdp_comm() const { return m_fsdp_comm; }
  const Communicator& dp_comm() const { return m_dp_comm; }

  // Both fsdp and dp ranks train on their own samples: the global batch is cut into
  // data_size() = dp x fsdp parts, part data_rank() is this rank's, and data_comm() joins the
  // ranks of the same tensor-parallel rank that hold the other parts (losses are averaged over it).
  int data_size() const { return m_dp * m_fsdp; }
  int data_rank() const { return m_dp_rank * m_fsdp + m_fsdp_rank; }
  const Communicator& data_comm() const { return m_data_comm; }

  // "dp x fsdp x tp = 1 x 2 x 2": for logs and agreement checks.
  std::string describe() const {
    return Impl::concat("dp x fsdp x tp = ", m_dp, " x ", m_fsdp, " x ", m_tp);
  }

 private:
  Communicator m_world;
  int m_tp, m_fsdp, m_dp;
  int m_tp_rank = 0, m_fsdp_rank = 0, m_dp_rank = 0;
  // Placeholders until split (copies of world are cheap: shared ownership, no MPI call).
  Communicator m_tp_comm = m_world, m_fsdp_comm = m_world, m_dp_comm = m_world,
               m_data_comm = m_world;
};

}  // namespace dchag

#endif
