#include <dchag/kernels/cross_attention.hpp>

#include <cmath>
#include <ostream>

#include "test_common.hpp"

using namespace dchag_test;

namespace {

struct Shape {
  int K, N, H, hd, D;
};

std::ostream& operator<<(std::ostream& os, const Shape& s) {
  return os << "K = " << s.K << ", N = " << s.N << ", H = " << s.H << ", hd = " << s.hd
            << ", D = " << s.D;
}

// One key, row, head and width each; odd sizes everywhere; K*N = 240 terms in the dq reduction.
const Shape shapes[] = {{1, 1, 1, 1, 1}, {3, 5, 2, 4, 7}, {7, 3, 3, 5, 6},
                        {2, 9, 1, 7, 3}, {5, 4, 4, 1, 9}, {6, 40, 2, 3, 5}};

// The K tokens of row n, columns [col, col + width) of kv: the keys (col = h*hd) or the values
// (col = I + h*hd) that head h of row n attends over, one key per row.
Matrix<double> tokens_of_row(const Matrix<double>& kv, int n, int N, int K, int col, int width) {
  Matrix<double> m(K, width);
  for (int c = 0; c < K; ++c) m.row(c) = kv.row(c * N + n).segment(col, width);
  return m;
}

// The inverse placement, for the gradients of keys and values.
void add_tokens_of_row(Matrix<double>& kv, const Matrix<double>& m, int n, int N, int col) {
  for (Eigen::Index c = 0; c < m.rows(); ++c)
    kv.row(c * N + n).segment(col, m.cols()) += m.row(c);
}

template <class Space, class T>
struct Views {
  explicit Views(const Shape& s)
      : I(s.H * s.hd), W("W", 3 * I, s.D), gW("gW", 3 * I, s.D), b("b", 3 * I),
        gb("gb", 3 * I), x("x", s.D), gx("gx", s.D), q("q", I), dq("dq", I),
        kv("kv", s.K * s.N, 2 * I), dkv("dkv", s.K * s.N, 2 * I), attn("attn", s.N * s.H, s.K),
        dS("dS", s.N * s.H, s.K), dattn("dattn", s.N * s.H, s.K), ctx("ctx", s.N, I),
        dctx("dctx", s.N, I) {
    std::uint64_t seed = 1000;
    // Outputs too: every kernel but the query backward must overwrite them.
    fill_random(W, seed++);
    fill_random(gW, seed++);
    fill_random(b, seed++);
    fill_random(gb, seed++);
    fill_random(x, seed++);
    fill_random(gx, seed++);
    fill_random(q, seed++);
    fill_random(dq, seed++);
    fill_random(kv, seed++);
    fill_random(dkv, seed++);
    fill_random(attn, seed++);
    fill_random(dS, seed++);
    fill_random(dattn, seed++);
    fill_random(ctx, seed++);
    fill_random(dctx, seed++);
  }
  int I;
  dchag::View2<T, Space> W, gW;
  dchag::View1<T, Space> b, gb, x, gx, q, dq;
  dchag::View2<T, Space> kv, dkv, attn, dS, dattn, ctx, dctx;
};

dchag::Impl::CrossAttentionShape kernel_shape(const Shape& s) { return {s.K, s.N, s.H, s.hd}; }

// check(space, shape, views, I) on every shape, with fresh random views each time.
template <class C, class F>
void for_each_shape(F&& check) {
  typename C::space space;
  for (const Shape s : shapes) {
    CAPTURE(s);
    Views<typename C::space, typename C::scalar> v(s);
    check(space, s, v, v.I);
  }
}

}  // namespace

TEST_CASE_TEMPLATE_DEFINE("cross-attention query, scores and context match Eigen", C,
                          cross_attention_forward) {
  using T = typename C::scalar;
  for_each_shape<C>([](const auto& space, const Shape& s, auto& v, const int I) {

    dchag::Impl::cross_attention_query(space, v.W, v.b, v.x, v.q);
    const Matrix<double> W = to_eigen(v.W);
    const Eigen::VectorXd q_ref =
        W.topRows(I) * to_eigen_vector(v.x) + to_eigen_vector(v.b).head(I);
    CHECK(rel_diff(to_eigen_vector(v.q), q_ref) < tol<T>());

    const Eigen::VectorXd q = to_eigen_vector(v.q);
    const Matrix<double> kv = to_eigen(v.kv);
    dchag::Impl::cross_attention_scores(space, kernel_shape(s), v.q, v.kv, v.attn);
    const Matrix<double> attn = to_eigen(v.attn);
    Matrix<double> attn_ref(s.N * s.H, s.K), ctx_ref(s.N, I);
    for (int n = 0; n < s.N; ++n)
      for (int h = 0; h < s.H; ++h) {
        const Matrix<double> keys = tokens_of_row(kv, n, s.N, s.K, h * s.hd, s.hd);
        const Matrix<double> values = tokens_of_row(kv, n, s.N, s.K, I + h * s.hd, s.hd);
        attn_ref.row(n * s.H + h) = (keys * q.segment(h * s.hd, s.hd)).transpose();
        // The context from the kernel's own scores, so that each kernel is checked alone.
        ctx_ref.row(n).segment(h * s.hd, s.hd) = attn.row(n * s.H + h) * values;
      }
    CHECK(rel_diff(attn, attn_ref) < tol<T>());

    dchag::Impl::cross_attention_context(space, kernel_shape(s), v.attn, v.kv, v.ctx);
    CHECK(rel_diff(to_eigen(v.ctx), ctx_ref) < tol<T>());
  });
}
TEST_CASE_TEMPLATE_APPLY(cross_attention_forward, AllCases);

TEST_CASE_TEMPLATE_DEFINE("cross-attention backward kernels match Eigen", C,
                          cross_attention_backward) {
  using T = typename C::scalar;
  for_each_shape<C>([](const auto& space, const Shape& s, auto& v, const int I) {
    const T scale = T(1) / static_cast<T>(std::sqrt(double(s.hd)));
    const double sc = static_cast<double>(scale);
    const Eigen::VectorXd q = to_eigen_vector(v.q), x = to_eigen_vector(v.x);
    const Matrix<double> kv = to_eigen(v.kv), attn = to_eigen(v.attn), dS = to_eigen(v.dS);
    const Matrix<double> dctx = to_eigen(v.dctx), W = to_eigen(v.W);
    const Matrix<double> gW0 = to_eigen(v.gW);
    const Eigen::VectorXd gb0 = to_eigen_vector(v.gb), gx0 = to_eigen_vector(v.gx);

    Matrix<double> dattn_ref(s.N * s.H, s.K), dkv_ref = Matrix<double>::Zero(s.K * s.N, 2 * I);
    Eigen::VectorXd dq_ref = Eigen::VectorXd::Zero(I);
    for (int n = 0; n < s.N; ++n)
      for (int h = 0; h < s.H; ++h) {
        const int nh = n * s.H + h;
        const Matrix<double> keys = tokens_of_row(kv, n, s.N, s.K, h * s.hd, s.hd);
        const Matrix<double> values = tokens_of_row(kv, n, s.N, s.K, I + h * s.hd, s.hd);
        const Eigen::RowVectorXd dctx_h = dctx.row(n).segment(h * s.hd, s.hd);
        dattn_ref.row(nh) = (values * dctx_h.transpose()).transpose();
        const Matrix<double> dkeys =
            sc * dS.row(nh).transpose() * q.segment(h * s.hd, s.hd).transpose();
        const Matrix<double> dvalues = attn.row(nh).transpose() * dctx_h;
        add_tokens_of_row(dkv_ref, dkeys, n, s.N, h * s.hd);
        add_tokens_of_row(dkv_ref, dvalues, n, s.N, I + h * s.hd);
        dq_ref.segment(h * s.hd, s.hd) += sc * keys.transpose() * dS.row(nh).transpose();
      }

    dchag::Impl::cross_attention_dattn(space, kernel_shape(s), v.dctx, v.kv, v.dattn);
    CHECK(rel_diff(to_eigen(v.dattn), dattn_ref) < tol<T>());
    dchag::Impl::cross_attention_dkv(space, kernel_shape(s), scale, v.q, v.attn, v.dS, v.dctx,
                                     v.dkv);
    CHECK(rel_diff(to_eigen(v.dkv), dkv_ref) < tol<T>());
    // One chunk, fewer chunks than rows, one row per chunk: the same sum every way.
    using Space = std::decay_t<decltype(space)>;
    for (int chunks : {1, 3, s.K * s.N}) {
      CAPTURE(chunks);
      dchag::View2<T, Space> partial("partial", chunks, I);
      dchag::Impl::cross_attention_dq(space, kernel_shape(s), scale, v.dS, v.kv, partial, v.dq);
      CHECK(rel_diff(to_eigen_vector(v.dq), dq_ref) < tol<T>());
    }

    // Accumulates into the first I rows of the [3I, D] in_proj gradient only.
    const Eigen::VectorXd dq = to_eigen_vector(v.dq);
    dchag::Impl::cross_attention_query_backward(space, v.dq, v.x, v.W, v.gW, v.gb, v.gx);
    Matrix<double> gW_ref = gW0;
    gW_ref.topRows(I) += dq * x.transpose();
    Eigen::VectorXd gb_ref = gb0;
    gb_ref.head(I) += dq;
    const Matrix<double> gW = to_eigen(v.gW);
    CHECK(rel_diff(gW, gW_ref) < tol<T>());
    CHECK(gW.bottomRows(2 * I) == gW0.bottomRows(2 * I));
    const Eigen::VectorXd gb = to_eigen_vector(v.gb);
    CHECK(rel_diff(gb, gb_ref) < tol<T>());
    CHECK(gb.tail(2 * I) == gb0.tail(2 * I));
    CHECK(rel_diff(to_eigen_vector(v.gx), gx0 + W.topRows(I).transpose() * dq) < tol<T>());
  });
}
TEST_CASE_TEMPLATE_APPLY(cross_attention_backward, AllCases);
