// The yardstick: the machine's ceilings (sgemm on large squares; memory bandwidth from a copy
// and a triad over buffers far larger than the caches), measured in the same run, and what each
// kernel achieves at the model's shapes as a fraction of its roofline.
//   kernel_benchmark [--csv FILE] [--reps N]
//
// Bytes are compulsory traffic: each input read once, each output written once (an in-place
// update counts its read and its write). Like STREAM, the ceilings count bytes the same way, so
// the write-allocate reads a cache may add are in neither. A kernel's roof is
// min(sgemm ceiling, bytes/s ceiling x FLOP/byte): the bandwidth ceiling for the memory-bound
// kernels, sgemm for the GEMM-bound ones. Operands that fit in the caches can exceed 100%.
#include <dchag/dchag.hpp>
#include <mpi.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench_util.hpp"

namespace {

using Space = Kokkos::DefaultExecutionSpace;
using T = float;
using dchag_bench::fmt;
constexpr double F = sizeof(T);

template <class View>
void randomize(const View& v, unsigned seed) {
  auto h = Kokkos::create_mirror_view(v);
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> d(-1, 1);
  for (std::size_t i = 0; i < h.span(); ++i) h.data()[i] = d(gen);
  Kokkos::deep_copy(v, h);
}

enum class Kind { gemm_ceiling, bandwidth_ceiling, kernel };

struct Result {
  std::string name, shape;
  double seconds, flops, bytes;
  Kind kind;
};

struct Bench {
  Space space;
  int reps;
  std::vector<Result> results;

  template <class F>
  void run(const std::string& name, const std::string& shape, double flops, double bytes, F&& f,
           Kind kind = Kind::kernel) {
    results.push_back({name, shape, dchag_bench::best_seconds(space, reps, f), flops, bytes, kind});
  }

  // The roofline columns need both ceilings, so the table is built once everything ran.
  dchag_bench::Table table() const {
    double gemm_peak = 0, bw_peak = 0;
    for (const auto& r : results) {
      if (r.kind == Kind::gemm_ceiling) gemm_peak = std::max(gemm_peak, r.flops / r.seconds);
      if (r.kind == Kind::bandwidth_ceiling) bw_peak = std::max(bw_peak, r.bytes / r.seconds);
    }
    dchag_bench::Table t{{"kernel", "shape", "ms", "GFLOP/s", "GB/s", "bound", "of roof"}};
    for (const auto& r : results) {
      const double flop_rate = r.flops / r.seconds, byte_rate = r.bytes / r.seconds;
      // Which ceiling limits it: with no FLOPs counted, bandwidth; with no bytes, sgemm.
      const bool memory = r.kind == Kind::bandwidth_ceiling ||
                          (r.kind == Kind::kernel && r.flops == 0) ||
                          (r.kind == Kind::kernel && r.bytes > 0 &&
                           r.flops / r.bytes * bw_peak < gemm_peak);
      const double achieved = memory ? byte_rate : flop_rate;
      // Below the ridge point bytes/s against the bandwidth ceiling is the same fraction as
      // FLOP/s against FLOP/byte x bandwidth.
      const double roof = memory ? bw_peak : gemm_peak;
      t.add({r.name, r.shape, fmt(r.seconds * 1e3, "%.3f"),
             r.flops > 0 ? fmt(flop_rate * 1e-9, "%.1f") : "-",
             r.bytes > 0 ? fmt(byte_rate * 1e-9, "%.1f") : "-",
             memory ? "bandwidth" : "sgemm", roof > 0 ? fmt(100.0 * achieved / roof, "%.0f%%") : "-"});
    }
    return t;
  }
};

std::string str(std::size_t v) { return std::to_string(v); }

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
    Bench b{Space(), reps, {}};
    std::printf("dchag kernel benchmark: %s, concurrency %d, float\n", Space::name(),
                dchag::Impl::concurrency(Space()));
    dchag_bench::print_blas();
    using dchag::Op;

    // GEMM ceiling: large squares.
    for (int n : {1024, 2048}) {
      dchag::View2<T, Space> A("A", n, n), B("B", n, n), C("C", n, n);
      randomize(A, 1);
      randomize(B, 2);
      b.run("sgemm ceiling", std::to_string(n) + "^3", 2.0 * n * n * n, 3.0 * n * n * F,
            [&] { dchag::gemm(b.space, Op::N, Op::N, T(1), A, B, T(0), C); }, Kind::gemm_ceiling);
    }
    // Bandwidth ceiling: 256 MiB in all (copy) and 288 MiB (triad), far beyond any L3 a
    // benchmark machine has, so that every byte comes from memory.
    {
      const std::int64_t n = std::int64_t(32) << 20;  // 128 MiB of floats
      dchag::View1<T, Space> a("a", n), c("c", n);
      Kokkos::deep_copy(a, T(1));
      Kokkos::deep_copy(c, T(0));
      b.run("bandwidth ceiling: copy", "2 x 128 MiB", 0, 2.0 * n * F, [&] {
        Kokkos::parallel_for("copy", Kokkos::RangePolicy<Space>(b.space, 0, n),
                             KOKKOS_LAMBDA(std::int64_t i) { c(i) = a(i); });
      }, Kind::bandwidth_ceiling);
    }
    {
      const std::int64_t n = std::int64_t(24) << 20;  // 96 MiB of floats, three of them
      dchag::View1<T, Space> a("a", n), x("x", n), y("y", n);
      Kokkos::deep_copy(x, T(1));
      Kokkos::deep_copy(y, T(2));
      b.run("bandwidth ceiling: triad", "3 x 96 MiB", 2.0 * n, 3.0 * n * F, [&] {
        Kokkos::parallel_for("triad", Kokkos::RangePolicy<Space>(b.space, 0, n),
                             KOKKOS_LAMBDA(std::int64_t i) { a(i) = x(i) + T(3) * y(i); });
      }, Kind::bandwidth_ceiling);
    }

    // Transformer shapes: rows = B*L = 4096 tokens, D = 512, MLP hidden 2048.
    const int rows = 4096, D = 512, H = 2048;
    {
      dchag::View2<T, Space> X("X", rows, D), W("W", H, D), Y("Y", rows, H);
      randomize(X, 3);
      randomize(W, 4);
      const double bytes = (double(rows) * D + double(H) * D + double(rows) * H) * F;
      b.run("gemm x W^T (fc1)", "4096x512 * 512x2048", 2.0 * rows * D * H, bytes,
            [&] { dchag::gemm(b.space, Op::N, Op::T, T(1), X, W, T(0), Y); });
      dchag::View2<T, Space> dW("dW", H, D);
      // dW is accumulated: read and written.
      b.run("gemm dY^T x (dW)", "2048x4096 * 4096x512", 2.0 * rows * D * H,
            bytes + double(H) * D * F,
            [&] { dchag::gemm(b.space, Op::T, Op::N, T(1), Y, X, T(1), dW); });
    }
    // Attention products: B*heads = 8*8 = 64 batches, L = 256 tokens, head_dim 64.
    {
      const int nb = 64, L = 256, dh = 64;
      dchag::View3<T, Space> Q("Q", nb, L, dh), K("K", nb, L, dh), S("S", nb, L, L);
      randomize(Q, 5);
      randomize(K, 6);
      const double f = 2.0 * nb * L * L * dh;
      const double bytes = (2.0 * Q.size() + S.size()) * F;
      b.run("batched Q K^T (BLAS loop)", "64 x 256x64x256", f, bytes,
            [&] { dchag::batched_gemm_blas(b.space, Op::N, Op::T, T(1), Q, K, T(0), S); });
      b.run("batched Q K^T (team)", "64 x 256x64x256", f, bytes,
            [&] { dchag::batched_gemm_team(b.space, Op::N, Op::T, T(1), Q, K, T(0), S); });
      dchag::View3<T, Space> dS("dS", nb, L, L);
      randomize(dS, 7);
      auto S2 = dchag::Impl::as_matrix(S, nb * L, L);
      auto dS2 = dchag::Impl::as_matrix(dS, nb * L, L);
      b.run("softmax rows", "16384 x 256", 0, 2.0 * S.size() * F,
            [&] { dchag::softmax_rows(b.space, S2, S2); });
      b.run("softmax backward", "16384 x 256", 0, 3.0 * S.size() * F,
            [&] { dchag::softmax_rows_backward(b.space, S2, dS2, dS2); });
    }
    // The attention products at other model shapes, L = 128..512, head_dim 16..64, for both
    // forms: Q K^T, P V (and dQ = dS K), P^T dO (dV, and dK = dS^T Q).
    {
      const int nb = 64;
      const int shapes[][2] = {{128, 32}, {256, 64}, {512, 64}, {512, 16}};
      for (const auto& sh : shapes) {
        const int L = sh[0], dh = sh[1];
        dchag::View3<T, Space> Q("Q", nb, L, dh), K("K", nb, L, dh), O("O", nb, L, dh),
            S("S", nb, L, L);
        randomize(Q, 22);
        randomize(K, 23);
        randomize(S, 24);
        const double f = 2.0 * nb * L * L * dh;
        const double bytes = (2.0 * Q.size() + S.size()) * F;
        const std::string shape = str(nb) + " x " + str(L) + "x" + str(dh) + "x" + str(L);
        const std::string pv_shape = str(nb) + " x " + str(L) + "x" + str(L) + "x" + str(dh);
        if (!(L == 256 && dh == 64)) {  // that one is above
          b.run("batched Q K^T (BLAS loop)", shape, f, bytes,
                [&] { dchag::batched_gemm_blas(b.space, Op::N, Op::T, T(1), Q, K, T(0), S); });
          b.run("batched Q K^T (team)", shape, f, bytes,
                [&] { dchag::batched_gemm_team(b.space, Op::N, Op::T, T(1), Q, K, T(0), S); });
        }
        b.run("batched P V (BLAS loop)", pv_shape, f, bytes,
              [&] { dchag::batched_gemm_blas(b.space, Op::N, Op::N, T(1), S, K, T(0), O); });
        b.run("batched P V (team)", pv_shape, f, bytes,
              [&] { dchag::batched_gemm_team(b.space, Op::N, Op::N, T(1), S, K, T(0), O); });
        b.run("batched P^T dO (BLAS loop)", pv_shape, f, bytes,
              [&] { dchag::batched_gemm_blas(b.space, Op::T, Op::N, T(1), S, K, T(0), O); });
        b.run("batched P^T dO (team)", pv_shape, f, bytes,
              [&] { dchag::batched_gemm_team(b.space, Op::T, Op::N, T(1), S, K, T(0), O); });
      }
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
      const double mb = double(rows) * D * F, row = double(rows) * F, col = double(D) * F;
      // X in, Y out, gamma and beta in, mean and rstd out.
      b.run("layer_norm", "4096 x 512", 0, 2 * mb + 2 * col + 2 * row,
            [&] { dchag::layer_norm(b.space, X, g, be, T(1e-5), Y, mean, rstd); });
      dchag::View2<T, Space> dX("dX", rows, D);
      // X, dY, gamma, mean, rstd in; dX out; dgamma, dbeta accumulated.
      b.run("layer_norm backward", "4096 x 512", 0, 3 * mb + 5 * col + 2 * row,
            [&] { dchag::layer_norm_backward(b.space, X, g, mean, rstd, dY, dX, dg, db); });
      b.run("add_bias", "4096 x 512", 0, 2 * mb + col, [&] { dchag::add_bias(b.space, Y, be); });
      b.run("sum_rows (bias grad)", "4096 x 512", 0, mb + 2 * col,
            [&] { dchag::sum_rows(b.space, dY, db); });
      b.run("residual add", "4096 x 512", 0, 3 * mb,
            [&] { dchag::residual_add(b.space, X, dY, Y); });
    }
    {
      dchag::View2<T, Space> X("X", rows, H), Y("Y", rows, H), dY("dY", rows, H);
      randomize(X, 12);
      randomize(dY, 13);
      const double mb = double(rows) * H * F;
      b.run("gelu", "4096 x 2048", 0, 2 * mb, [&] { dchag::gelu(b.space, X, Y); });
      b.run("gelu backward", "4096 x 2048", 0, 3 * mb,
            [&] { dchag::gelu_backward(b.space, X, dY, Y); });
      // The sum is kept so that the compiler cannot drop a reduction whose result is unused.
      double sink = 0;
      b.run("sum_squares", "4096 x 2048", 0, mb, [&] { sink += dchag::sum_squares(b.space, X); });
      if (sink == 0) std::printf("(sum of squares was zero)\n");
    }

    // The channel-heavy model's stem: C = 256 channels, B = 4, 32 x 64 at patch 4 (L = 128,
    // N = B*L = 512 tokens per channel), D = 128; D-CHAG-L with 8 groups of 32 channels.
    const int C = 256, Bt = 4, Hi = 32, Wi = 64, p = 4, Dc = 128, G = 8;
    const int L = (Hi / p) * (Wi / p), N = Bt * L;
    const std::string tokens_shape = str(C) + " x " + str(N) + " x " + str(Dc);
    {
      dchag::View4<T, Space> img("img", Bt, C, Hi, Wi), img2("img2", Bt, C, Hi, Wi);
      dchag::View2<T, Space> tok("tok", N, C * p * p);
      randomize(img, 14);
      const double bytes = 2.0 * img.size() * F;
      const std::string shape = "4x256x32x64, p 4";
      b.run("patchify", shape, 0, bytes, [&] { dchag::patchify(b.space, img, p, tok); });
      b.run("unpatchify", shape, 0, bytes, [&] { dchag::unpatchify(b.space, tok, p, img2); });

      // Per-channel patch embedding: C products [N, p*p] x [p*p, D]; image in, tokens out.
      dchag::ChannelPatchEmbed<T, Space> embed(C, p, Dc);
      embed.init(1);
      const double f = 2.0 * C * N * Dc * p * p;
      const double tokens_bytes = double(C) * N * Dc * F;
      const double weight_bytes = double(C) * (Dc * p * p + Dc) * F;
      dchag::View3<T, Space> dtok("dtok", C, N, Dc);
      randomize(dtok, 15);
      b.run("channel patch embed", tokens_shape, f, img.size() * F + weight_bytes + tokens_bytes,
            [&] { embed.forward(b.space, img); });
      // Token gradient and the copied patches in; weight and bias gradients accumulated.
      b.run("channel patch embed backward", tokens_shape, f,
            tokens_bytes + img.size() * F + 2 * weight_bytes, [&] { embed.backward(b.space, dtok); });
    }
    {
      dchag::View3<T, Space> tok("tok", C, N, Dc), dtok("dtok", C, N, Dc), dout("dout", G, N, Dc);
      randomize(tok, 16);
      randomize(dout, 17);
      dchag::ChannelEmbedding<T, Space> var_embed(C, Dc);
      var_embed.init();
      const double tb = double(tok.size()) * F, eb = double(C) * Dc * F;
      b.run("channel embedding (var_embed)", tokens_shape, 0, 2 * tb + eb,
            [&] { var_embed.forward(b.space, tok); });
      b.run("channel embedding backward", tokens_shape, 0, tb + 2 * eb,
            [&] { var_embed.backward(b.space, tok); });

      dchag::LinearAggregator<T, Space> agg("agg.0", G, C / G, Dc);
      agg.init(2);
      const double ob = double(dout.size()) * F;
      const std::string agg_shape = tokens_shape + " -> " + str(G);
      b.run("linear aggregator", agg_shape, 2.0 * tok.size(), tb + ob,
            [&] { agg.forward(b.space, tok); });
      // Tokens and output gradient in, token gradient out.
      b.run("linear aggregator backward", agg_shape, 3.0 * tok.size(), 2 * tb + ob,
            [&] { agg.backward(b.space, dout); });
    }
    {
      // The forecast loss on the channel-heavy prediction: pred and target in, gradient out.
      dchag::View4<T, Space> pred("pred", Bt, C, Hi, Wi), y("y", Bt, C, Hi, Wi),
          dpred("dpred", Bt, C, Hi, Wi);
      dchag::View1<T, Space> w("w", Hi);
      randomize(pred, 18);
      randomize(y, 19);
      Kokkos::deep_copy(w, T(1));
      double sink = 0;
      b.run("lat-weighted MSE + grad", "4x256x32x64", 0, (3.0 * pred.size() + Hi) * F,
            [&] { sink += dchag::lat_weighted_mse(b.space, pred, y, w, dpred); });
      if (sink == 0) std::printf("(loss was zero)\n");
    }
    {
      // AdamW over one large tensor (value, gradient, two moments in; value, moments out), and
      // over the parameter list of a D-CHAG-L model with 512 channels (over a thousand tensors,
      // most of them small): the optimizer's one launch for all of them against one launch per
      // tensor (what it did before), and the same for the gradient norm's reduction.
      const std::size_t n = std::size_t(8) << 20;
      dchag::View1<T, Space> value("value", n), grad("grad", n);
      randomize(value, 20);
      randomize(grad, 21);
      dchag::ParameterList<T, Space> one;
      dchag::Impl::add_parameter<T, Space>(one, "weight", value, grad, true);
      dchag::AdamW<T, Space> opt(one);
      b.run("AdamW", "1 tensor, 8M values", 0, 7.0 * n * F, [&] { opt.step(b.space, one, 1e-4); });

      dchag::ModelConfig mc;
      mc.channels = 2 * C;
      mc.dim = Dc;
      mc.levels = {G, 1};
      dchag::ChannelViT<T, Space, dchag::DistributedChannels<dchag::LinearAggregator>> model(mc);
      const auto params = model.parameters();
      std::size_t values = 0;
      for (const auto& q : params) values += q.size();
      const std::string shape = str(params.size()) + " tensors, " + fmt(values / 1e6, "%.1f") + "M values";
      std::vector<dchag::ParameterList<T, Space>> singles;
      std::vector<dchag::AdamW<T, Space>> per_tensor;
      for (const auto& q : params) {
        singles.push_back({q});
        per_tensor.emplace_back(singles.back());
      }
      b.run("AdamW, launch per tensor (C=512 model)", shape, 0, 7.0 * values * F, [&] {
        for (std::size_t i = 0; i < singles.size(); ++i) per_tensor[i].step(b.space, singles[i], 1e-4);
      });
      dchag::AdamW<T, Space> model_opt(params);
      b.run("AdamW, one launch (C=512 model)", shape, 0, 7.0 * values * F,
            [&] { model_opt.step(b.space, params, 1e-4); });
      double sink = 0;
      b.run("grad norm, reduction per tensor (C=512)", shape, 0, double(values) * F, [&] {
        double s = 0;
        for (const auto& q : params) s += dchag::sum_squares(b.space, q.grad);
        sink += std::sqrt(s);
      });
      const dchag::ParameterTable<T, Space> param_table(params);
      b.run("grad norm, one reduction (C=512 model)", shape, 0, double(values) * F,
            [&] { sink += dchag::global_grad_norm(b.space, model.grid(), param_table); });
      if (sink < 0) std::printf("(negative norm)\n");
    }

    const auto table = b.table();
    table.print();
    // The portable team GEMM against the BLAS loop on the same shapes (the time ratio).
    for (const auto& team : b.results) {
      const std::string suffix = " (team)";
      if (team.name.size() < suffix.size() ||
          team.name.compare(team.name.size() - suffix.size(), suffix.size(), suffix) != 0)
        continue;
      const std::string base = team.name.substr(0, team.name.size() - suffix.size());
      for (const auto& r : b.results)
        if (r.name == base + " (BLAS loop)" && r.shape == team.shape)
          std::printf("team / BLAS loop time: %.2fx  %s, %s\n", team.seconds / r.seconds,
                      base.c_str(), team.shape.c_str());
    }
    table.write_csv(csv);
    std::printf("wrote %s\n", csv.c_str());
  }
  Kokkos::finalize();
  MPI_Finalize();
  return 0;
}
