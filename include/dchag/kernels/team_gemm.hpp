#ifndef DCHAG_KERNELS_TEAM_GEMM_HPP
#define DCHAG_KERNELS_TEAM_GEMM_HPP

// The library's own matrix-product kernel, for batches of products
// C[i] = alpha * op(A[i]) * op(B[i]) + beta * C[i] of any layout: the GPUs' batched GEMM, and
// every product of 16-bit values (which BLAS does not take), accumulated in float.
//
// The team kernel on a GPU (CUDA/HIP): one launch for the whole batch, a league of
// batch x (64 x 64 tiles of C) teams, i.e. thread blocks (1,024 at 64 batches of 256 x 256
// scores). A block is 16 team threads x 16 vector lanes (threadIdx.y, threadIdx.x). For each
// K block of 32 it copies op(A)[64 x 32] and op(B)[32 x 64] into shared memory (level-0
// scratch) with the lanes along the operand's contiguous index (coalesced loads, transposes
// done in the copy), synchronises, and each of the 256 threads accumulates its interleaved
// 4 x 4 micro-tile of C in registers, 16 FMAs per 8 shared-memory reads, conflict-free and
// broadcast; C is written once per K block with the lanes along its rows (coalesced). On a CPU
// the same code runs one thread per team over 128 x 128 tiles with SIMD-wide micro-tiles
// (BatchedGemmTiling below).

#include <Kokkos_Core.hpp>
#include <cstddef>
#include <type_traits>

#include <dchag/core/scalar_traits.hpp>
#include <dchag/kernels/blas_gemm.hpp>

namespace dchag {
namespace Impl {

// How the team kernel cuts C. A team owns an mt x nt tile of one product; K is walked in blocks
// of kc, each block of op(A) and op(B) staged in team scratch (level 0: shared memory on a GPU)
// with k the slow index, so the inner loop reads both operands along the tile's rows and
// columns whatever the transposes. Each thread accumulates an mr x nr micro-tile in registers:
// mr * nr multiply-adds for every mr + nr values it reads from scratch. Past the first K block
// the partial products are added to C (C is read back once per block; attention's K, the head
// dimension or L, is one to a few blocks).
template <class ExecSpace,
          bool Host = Kokkos::SpaceAccessibility<ExecSpace, Kokkos::HostSpace>::accessible>
struct BatchedGemmTiling {
  // GPU: 16 threads x 16 vector lanes (256 threads, threadIdx.y and .x under CUDA/HIP), one
  // 4 x 4 micro-tile each, cover a 64 x 64 tile. A thread's rows and columns are interleaved
  // (row p + 16 i, column q + 16 j): the lanes of a warp read 16 consecutive floats of the B
  // block (no bank conflict), the same A value (a broadcast), and store consecutive columns of
  // C (coalesced). The A and B blocks' rows are padded by one value so that the staging writes
  // of a transposed operand, which walk k across the lanes, hit distinct banks. 2 x 32 x 65
  // floats of scratch per team leave room for several teams per multiprocessor.
  static constexpr int mt = 64, nt = 64, kc = 32, mr = 4, nr = 4, pad = 1;
  static constexpr bool interleaved = true;
  static constexpr int group = 1;
  static constexpr int team_size = mt / mr, vector_length = nt / nr;
};

template <class ExecSpace>
struct BatchedGemmTiling<ExecSpace, true> {
  // Host: one thread per team (teams are what the backend spreads over cores), walking the
  // micro-tiles of its tile. A micro-tile's columns are contiguous so that the compiler turns
  // the nr-wide inner loop into SIMD lanes: 4 x 8 accumulators fit the 16 SSE registers of a
  // plain x86-64 build with room for the operands; a build for AVX-512 (-march=native on such
  // a CPU) gets rows of 16, one register each (measured at 1.3-1.8x the speed of 4 x 8 there;
  // 8 x 16 and 6 x 16 blocks are not kept in registers by GCC 12 and run 10x slower).
  // 128 x 128 tiles amortise the transposing copies over 128 rows or columns; their
  // 2 x 64 x 128 floats of scratch stay in L2.
#if defined(__AVX512F__)
  static constexpr int nr = 16;
#else
  static constexpr int nr = 8;
#endif
  static constexpr int mt = 128, nt = 128, kc = 64, mr = 4, pad = 0;
  static constexpr bool interleaved = false;
  static constexpr int group = 4;  // rows transposed at a time when staging (stage())
  static constexpr int team_size = 1, vector_length = 1;
};

// A 16-bit T is staged into scratch already converted to its accumulation type (float), so
// that the micro-tiles multiply and add in float. Its partial products are not added to C
// block by block, which would round the running sum to 16 bits at every K block: a float tile
// of C in scratch carries the sum over the K blocks, and C is written once, alpha and beta
// applied in float, after the last block.
template <class Tiling, bool TransA, bool TransB, class AV, class BV, class CV, class Scratch>
struct BatchedGemmTeam {
  using T = typename CV::non_const_value_type;
  using S = accum_t<T>;  // scratch, registers, alpha and beta
  using ScratchView = Kokkos::View<S*, Scratch, Kokkos::MemoryUnmanaged>;
  // Whether the sum over K is carried in a float tile of C (16-bit T), not in C itself.
  static constexpr bool carry = is_low_precision_v<T>;
  static constexpr int mt = Tiling::mt, nt = Tiling::nt, kc = Tiling::kc;
  static constexpr int mr = Tiling::mr, nr = Tiling::nr, pad = Tiling::pad;
  static constexpr int pm = mt / mr, pn = nt / nr;  // the grid of micro-tiles in a tile
  static_assert(mt % mr == 0 && nt % nr == 0, "micro-tiles must divide the tile");
  // Both blocks are k-major in scratch: op(A)(x, kk) at a_block[kk * a_ks + x], op(B)(kk, x)
  // at b_block[kk * b_ks + x]. Walking k then strides through both, so a compiler vectorises
  // the micro-tile's columns (k-contiguous A would invite it to vectorise the k loop instead,
  // as a reduction, with B gathered).
  static constexpr int a_ks = mt + pad, b_ks = nt + pad;
  static constexpr std::size_t a_size = std::size_t(kc) * (mt + pad);
  static constexpr std::size_t b_size = std::size_t(kc) * (nt + pad);
  static constexpr std::size_t c_size = carry ? std::size_t(mt) * nt : 0;

  AV A;
  BV B;
  CV C;
  S alpha, beta;
  int m, n, k, tiles_m, tiles_n, scratch_level;

  static std::size_t scratch_bytes() {
    return ScratchView::shmem_size(a_size) + ScratchView::shmem_size(b_size) +
           (carry ? ScratchView::shmem_size(c_size) : 0);
  }

  // A loop over the lanes of one team thread: ThreadVectorRange on a GPU; on a CPU a plain
  // loop, since ThreadVectorRange there is a loop under `omp simd` that would put the SIMD
  // lanes on this loop instead of the contiguous one inside f.
  template <class Member, class F>
  KOKKOS_INLINE_FUNCTION static void lanes(const Member& team, int count, const F& f) {
    if (Tiling::interleaved) {
      Kokkos::parallel_for(Kokkos::ThreadVectorRange(team, count), f);
    } else {
      for (int j = 0; j < count; ++j) f(j);
    }
  }

  // dst[kk * ks + x] = src(i, x0 + x, k0 + kk) (XMajor: a transposing copy) or
  // src(i, k0 + kk, x0 + x), for x < width, kk < kn, zero where x runs past the operand's
  // extent xn. A GPU's lanes walk the source's last index, contiguous for LayoutRight: global
  // memory is read coalesced, and the row padding of dst spreads the transposing writes over
  // the banks. A CPU transposes `group` rows at a time: the group's values at one k are
  // contiguous in dst, one SIMD store.
  template <bool XMajor, class Member, class V>
  KOKKOS_INLINE_FUNCTION static void stage(const Member& team, const V& src, int i, int x0,
                                           int xn, int k0, int kn, int width, S* dst, int ks) {
    const int xv = xn - x0 < width ? xn - x0 : width;
    if (XMajor) {
      constexpr int g = Tiling::group;
      Kokkos::parallel_for(Kokkos::TeamThreadRange(team, (width + g - 1) / g), [&](int xg) {
        const int x = xg * g;
        if (x + g <= xv) {
          // g x g blocks: g contiguous loads from each source row, g contiguous stores.
          const int kb = Tiling::interleaved ? 0 : kn / g * g;
          for (int kk = 0; kk < kb; kk += g) {
            S t[g][g];
            for (int j = 0; j < g; ++j)
              for (int q = 0; q < g; ++q) t[j][q] = src(i, x0 + x + j, k0 + kk + q);
            for (int q = 0; q < g; ++q)
              for (int j = 0; j < g; ++j) dst[(kk + q) * ks + x + j] = t[j][q];
          }
          lanes(team, kn - kb, [&](int kq) {
            const int kk = kb + kq;
            for (int j = 0; j < g; ++j) dst[kk * ks + x + j] = src(i, x0 + x + j, k0 + kk);
          });
        } else {
          lanes(team, kn, [&](int kk) {
            for (int j = 0; j < g; ++j)
              dst[kk * ks + x + j] = x + j < xv ? S(src(i, x0 + x + j, k0 + kk)) : S(0);
          });
        }
      });
    } else {
      // The copy and the zero fill are separate loops so that the copy has no test inside.
      Kokkos::parallel_for(Kokkos::TeamThreadRange(team, kn), [&](int kk) {
        S* const d = dst + kk * ks;
        Kokkos::parallel_for(Kokkos::ThreadVectorRange(team, xv),
                             [&](int x) { d[x] = src(i, k0 + kk, x0 + x); });
        Kokkos::parallel_for(Kokkos::ThreadVectorRange(team, width - xv),
                             [&](int x) { d[xv + x] = S(0); });
      });
    }
  }

  KOKKOS_INLINE_FUNCTION static int clamp_count(int v, int hi) {
    return v < 0 ? 0 : v < hi ? v : hi;
  }

  // acc[r][c] = sum over kk < kn of a[kk * a_ks + r * rstep] * b[kk * b_ks + c * cstep]: the
  // register block. The nr-wide rows of b are the SIMD lanes on a CPU.
  template <int rstep, int cstep>
  KOKKOS_INLINE_FUNCTION static void multiply(const S* a, const S* b, int kn,
                                              S (&acc)[mr][nr]) {
    for (int r = 0; r < mr; ++r)
      for (int c = 0; c < nr; ++c) acc[r][c] = S(0);
    for (int kk = 0; kk < kn; ++kk) {
      S av[mr], bv[nr];
      for (int r = 0; r < mr; ++r) av[r] = a[r * rstep];
      for (int c = 0; c < nr; ++c) bv[c] = b[c * cstep];
      for (int r = 0; r < mr; ++r)
        for (int c = 0; c < nr; ++c) acc[r][c] += av[r] * bv[c];
      a += a_ks;
      b += b_ks;
    }
  }

  template <class Member>
  KOKKOS_INLINE_FUNCTION void operator()(const Member& team) const {
    const int tiles = tiles_m * tiles_n;
    const int i = team.league_rank() / tiles;
    const int t = team.league_rank() % tiles;
    const int m0 = (t / tiles_n) * mt, n0 = (t % tiles_n) * nt;
    ScratchView as(team.team_scratch(scratch_level), a_size);
    ScratchView bs(team.team_scratch(scratch_level), b_size);
    S* const a_block = as.data();
    S* const b_block = bs.data();
    S* c_tile = nullptr;
    if constexpr (carry) c_tile = ScratchView(team.team_scratch(scratch_level), c_size).data();
    // A thread's micro-tile element (r, c) is C's row m0 + row0 + r * rstep, column
    // n0 + col0 + c * cstep.
    constexpr int rstep = Tiling::interleaved ? pm : 1;
    constexpr int cstep = Tiling::interleaved ? pn : 1;
    // With contiguous micro-tiles, those wholly past C's edge (a partial tile, or C narrower
    // than a tile, as P V is at head dimensions below 64) are skipped, and so is their staging.
    // Interleaved, every thread has elements near the tile's origin and all of them run.
    const int m_left = m - m0 < mt ? m - m0 : mt, n_left = n - n0 < nt ? n - n0 : nt;
    const int pm_used = Tiling::interleaved ? pm : (m_left + mr - 1) / mr;
    const int pn_used = Tiling::interleaved ? pn : (n_left + nr - 1) / nr;
    const std::ptrdiff_t c_row_stride = C.stride(1), c_col_stride = C.stride(2);
    for (int k0 = 0; k0 < k; k0 += kc) {
      const int kn = k - k0 < kc ? k - k0 : kc;
      // op(A)(x, kk) is A(x, kk), or A(kk, x) when transposed; op(B)(kk, x) is B(kk, x), or
      // B(x, kk) when transposed.
      stage<!TransA>(team, A, i, m0, m, k0, kn, pm_used * mr, a_block, a_ks);
      stage<TransB>(team, B, i, n0, n, k0, kn, pn_used * nr, b_block, b_ks);
      team.team_barrier();
      // C = alpha * product + beta * C on the first block, C += alpha * product after it.
      // beta = 0 overwrites: C may hold anything, NaN included.
      const S c_scale = k0 == 0 ? beta : S(1);
      const bool overwrite = c_scale == S(0);
      const bool last = k0 + kc >= k;
      // One micro-tile: its product, then its share of C.
      const auto micro_tile = [&](int p, int q) {
        const int row0 = Tiling::interleaved ? p : p * mr;
        const int col0 = Tiling::interleaved ? q : q * nr;
        S acc[mr][nr];
        multiply<rstep, cstep>(a_block + row0, b_block + col0, kn, acc);
        if constexpr (carry) {
          // The thread's own elements of the float tile: no other thread touches them.
          S* const t00 = c_tile + row0 * nt + col0;
          for (int r = 0; r < mr; ++r)
            for (int c = 0; c < nr; ++c) {
              S& t = t00[r * rstep * nt + c * cstep];
              t = k0 == 0 ? acc[r][c] : t + acc[r][c];
              acc[r][c] = t;
            }
          if (!last) return;
        }
        // The micro-tile's elements inside C: loops with no test inside, so that a CPU stores
        // whole SIMD registers.
        const int rn = clamp_count((m - m0 - row0 + rstep - 1) / rstep, mr);
        const int cn = clamp_count((n - n0 - col0 + cstep - 1) / cstep, nr);
        if (rn == 0 || cn == 0) return;
        T* const c00 = &C(i, m0 + row0, n0 + col0);
        const std::ptrdiff_t crs = rstep * c_row_stride, ccs = cstep * c_col_stride;
        // A carried sum is written once, after the last K block, with beta as the caller gave it.
        const S scale = carry ? beta : c_scale;
        if (carry ? beta == S(0) : overwrite) {
          for (int r = 0; r < rn; ++r)
            for (int c = 0; c < cn; ++c) c00[r * crs + c * ccs] = alpha * acc[r][c];
        } else {
          for (int r = 0; r < rn; ++r)
            for (int c = 0; c < cn; ++c) {
              T& cv = c00[r * crs + c * ccs];
              cv = alpha * acc[r][c] + scale * S(cv);
            }
        }
      };
      Kokkos::parallel_for(Kokkos::TeamThreadRange(team, pm_used), [&](int p) {
        lanes(team, pn_used, [&](int q) { micro_tile(p, q); });
      });
      // The next block overwrites the scratch the slower threads may still be reading.
      if (k0 + kc < k) team.team_barrier();
    }
  }
};

template <bool TransA, bool TransB, class Tiling, class ExecSpace, class AV, class BV, class CV>
void launch_batched_gemm_team(const ExecSpace& space,
                              gemm_scalar_t<CV> alpha,
                              const AV& A, const BV& B, gemm_scalar_t<CV> beta,
                              const CV& C) {
  using Policy = Kokkos::TeamPolicy<ExecSpace>;
  using Kernel = BatchedGemmTeam<Tiling, TransA, TransB, AV, BV, CV,
                                 typename ExecSpace::scratch_memory_space>;
  const int m = static_cast<int>(C.extent(1)), n = static_cast<int>(C.extent(2));
  const int k = static_cast<int>(TransA ? A.extent(1) : A.extent(2));
  const int tiles_m = (m + Tiling::mt - 1) / Tiling::mt;
  const int tiles_n = (n + Tiling::nt - 1) / Tiling::nt;
  const int league = static_cast<int>(C.extent(0)) * tiles_m * tiles_n;
  // Level 0 where the blocks fit (always on a GPU). The host backends cap level 0 at 32 KiB
  // though the host tile's 64 KiB sit in a core's L2 (and mostly L1) all the same; their
  // level 1 is the same kind of memory.
  const std::size_t bytes = Kernel::scratch_bytes();
  const int level = bytes <= std::size_t(Policy::scratch_size_max(0)) ? 0 : 1;
  const Kernel kernel{A, B, C, alpha, beta, m, n, k, tiles_m, tiles_n, level};
  Kokkos::parallel_for(
      "dchag::batched_gemm_team",
      Policy(space, league, Tiling::team_size, Tiling::vector_length)
          .set_scratch_size(level, Kokkos::PerTeam(bytes)),
      kernel);
}

// The team form with a given tiling (the tests run the GPU's on a host backend too).
template <class Tiling, class ExecSpace, class AV, class BV, class CV>
void batched_gemm_team_tiled(const ExecSpace& space, Op opa, Op opb,
                             gemm_scalar_t<CV> alpha, const AV& A, const BV& B,
                             gemm_scalar_t<CV> beta, const CV& C) {
  if (opa == Op::N && opb == Op::N)
    launch_batched_gemm_team<false, false, Tiling>(space, alpha, A, B, beta, C);
  else if (opa == Op::N)
    launch_batched_gemm_team<false, true, Tiling>(space, alpha, A, B, beta, C);
  else if (opb == Op::N)
    launch_batched_gemm_team<true, false, Tiling>(space, alpha, A, B, beta, C);
  else
    launch_batched_gemm_team<true, true, Tiling>(space, alpha, A, B, beta, C);
}

}  // namespace Impl
}  // namespace dchag

#endif
