// The yardstick: the machine's sgemm ceiling and what each kernel achieves at transformer-like
// shapes (GFLOP/s for products, GB/s of compulsory traffic for the memory-bound kernels).
//   kernel_benchmark [--csv FILE] [--reps N]
#include <dchag/dchag.hpp>
#include <mpi.h>

#include <cstring>
#include <random>
#include <string>

#include "bench_util.hpp"

namespace {

using Space = Kokkos::DefaultExecutionSpace;
using T = float;
using dchag_bench::fmt;

template <class View>
void randomize(const View& v, unsigned seed) {
  auto h = Kokkos::create_mirror_view(v);
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> d(-1, 1);
  for (std::size_t i = 0; i < h.span(); ++i) h.data()[i] = d(gen);
  Kokkos::deep_copy(v, h);
}

struct Bench {
  Space space;
  int reps;
  dchag_bench::Table table{{"kernel", "shape", "ms", "GFLOP/s", "GB/s"}};

  template <class F>
  void run(const std::string& name, const std::string& shape, double flops, double bytes, F&& f) {
    const double s = dchag_bench::best_seconds(space, reps, f);
    table.add({name, shape, fmt(s * 1e3, "%.3f"), flops > 0 ? fmt(flops / s * 1e-9, "%.1f") : "-",
               bytes > 0 ? fmt(bytes / s * 1e-9, "%.1f") : "-"});
  }
};

}  // namespace

int main(int argc, char* argv[]) {
  MPI_Init(&argc, &argv);
  Kokkos::initialize(argc, argv);
  {
    std::string csv = "kernel_benchmark.csv";
    int reps = 5;
    for (int i = 1; i < argc; ++i) {
      if (!std::strcmp(argv[i], "--csv") && i + 1 < argc) csv = argv[++i];
      else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) reps = std::atoi(argv[++i]);
    }
    Bench b{Space(), reps};
    std::printf("dchag kernel benchmark: %s, concurrency %d, float\n", Space::name(),
                dchag::Impl::concurrency(Space()));
    using dchag::Op;

    // GEMM ceiling: large squares.
    for (int n : {1024, 2048}) {
      dchag::View2<T, Space> A("A", n, n), B("B", n, n), C("C", n, n);
      randomize(A, 1);
      randomize(B, 2);
      b.run("sgemm ceiling", std::to_string(n) + "^3", 2.0 * n * n * n, 0,
            [&] { dchag::gemm(b.space, Op::N, Op::N, T(1), A, B, T(0), C); });
    }
    // Transformer shapes: rows = B*L = 4096 tokens, D = 512, MLP hidden 2048.
    const int rows = 4096, D = 512, H = 2048;
    {
      dchag::View2<T, Space> X("X", rows, D), W("W", H, D), Y("Y", rows, H);
      randomize(X, 3);
      randomize(W, 4);
      b.run("gemm x W^T (fc1)", "4096x512 * 512x2048", 2.0 * rows * D * H, 0,
            [&] { dchag::gemm(b.space, Op::N, Op::T, T(1), X, W, T(0), Y); });
      dchag::View2<T, Space> dW("dW", H, D);
      b.run("gemm dY^T x (dW)", "2048x4096 * 4096x512", 2.0 * rows * D * H, 0,
            [&] { dchag::gemm(b.space, Op::T, Op::N, T(1), Y, X, T(1), dW); });
    }
    // Attention products: B*heads = 8*8 = 64 batches, L = 256 tokens, head_dim 64.
    {
      const int nb = 64, L = 256, dh = 64;
      dchag::View3<T, Space> Q("Q", nb, L, dh), K("K", nb, L, dh), S("S", nb, L, L);
      randomize(Q, 5);
      randomize(K, 6);
      const double f = 2.0 * nb * L * L * dh;
      b.run("batched Q K^T (BLAS loop)", "64 x 256x64x256", f, 0,
            [&] { dchag::batched_gemm_blas(b.space, Op::N, Op::T, T(1), Q, K, T(0), S); });
      b.run("batched Q K^T (team)", "64 x 256x64x256", f, 0,
            [&] { dchag::batched_gemm_team(b.space, Op::N, Op::T, T(1), Q, K, T(0), S); });
      dchag::View3<T, Space> dS("dS", nb, L, L);
      randomize(dS, 7);
      auto S2 = dchag::Impl::as_matrix(S, nb * L, L);
      auto dS2 = dchag::Impl::as_matrix(dS, nb * L, L);
      b.run("softmax rows", "16384 x 256", 0, 2.0 * S.size() * sizeof(T),
            [&] { dchag::softmax_rows(b.space, S2, S2); });
      b.run("softmax backward", "16384 x 256", 0, 3.0 * S.size() * sizeof(T),
            [&] { dchag::softmax_rows_backward(b.space, S2, dS2, dS2); });
    }
    // Row kernels at [4096, 512] and [4096, 2048].
    {
      dchag::View2<T, Space> X("X", rows, D), Y("Y", rows, D), dY("dY", rows, D);
      dchag::View1<T, Space> g("g", D), be("be", D), dg("dg", D), db("db", D);
      dchag::View1<T, Space> mean("mean", rows), rstd("rstd", rows);
      randomize(X, 8);
      randomize(g, 9);
      randomize(be, 10);
      randomize(dY, 11);
      const double mb = double(rows) * D * sizeof(T);
      b.run("layer_norm", "4096 x 512", 0, 2 * mb,
            [&] { dchag::layer_norm(b.space, X, g, be, T(1e-5), Y, mean, rstd); });
      dchag::View2<T, Space> dX("dX", rows, D);
      b.run("layer_norm backward", "4096 x 512", 0, 3 * mb,
            [&] { dchag::layer_norm_backward(b.space, X, g, mean, rstd, dY, dX, dg, db); });
      b.run("add_bias", "4096 x 512", 0, 2 * mb, [&] { dchag::add_bias(b.space, Y, be); });
      b.run("sum_rows (bias grad)", "4096 x 512", 0, mb, [&] { dchag::sum_rows(b.space, dY, db); });
    }
    {
      dchag::View2<T, Space> X("X", rows, H), Y("Y", rows, H), dY("dY", rows, H);
      randomize(X, 12);
      randomize(dY, 13);
      const double mb = double(rows) * H * sizeof(T);
      b.run("gelu", "4096 x 2048", 0, 2 * mb, [&] { dchag::gelu(b.space, X, Y); });
      b.run("gelu backward", "4096 x 2048", 0, 3 * mb,
            [&] { dchag::gelu_backward(b.space, X, dY, Y); });
      // The sum is kept so that the compiler cannot drop a reduction whose result is unused.
      double sink = 0;
      b.run("sum_squares", "4096 x 2048", 0, mb, [&] { sink += dchag::sum_squares(b.space, X); });
      if (sink == 0) std::printf("(sum of squares was zero)\n");
    }
    b.table.print();
    b.table.write_csv(csv);
    std::printf("wrote %s\n", csv.c_str());
  }
  Kokkos::finalize();
  MPI_Finalize();
  return 0;
}
