// Produces the erf polynomials of include/dchag/core/fast_math.hpp: Chebyshev interpolation in
// long double at degree+1 nodes, converted to monomials in t = (x - c) / h, with the error of
// erf that the coefficients give once rounded to float (or, with a 6th argument, double).
//   g++ -O2 -o fit scripts/fit_erf_coefficients.cpp
//   ./fit 0 6 0 1     (erf(sqrt(s))/sqrt(s) on s in [0, 1], float; fast_math subtracts 1)
//   ./fit 3 8 1 4     (log(erfc(a) exp(a^2)) on [1, 4], float)
//   ./fit 0 11 0 1 d  and  ./fit 3 24 1 6 d   (double)
#include <cmath>
#include <cstdio>
#include <vector>
#include <functional>
#include <cstdlib>
using R = long double;
std::vector<R> fit(std::function<R(R)> f, R a, R b, int n) {
  // n+1 nodes, degree n
  int N = n + 1;
  std::vector<R> c(N, 0);
  const R pi = 3.141592653589793238462643383279L;
  for (int k = 0; k < N; ++k) {
    R th = pi * (k + 0.5L) / N;
    R t = cosl(th);
    R x = (a + b) / 2 + (b - a) / 2 * t;
    R fx = f(x);
    for (int j = 0; j < N; ++j) c[j] += fx * cosl(j * th);
  }
  for (int j = 0; j < N; ++j) c[j] *= (j == 0 ? 1.0L : 2.0L) / N;
  // Chebyshev -> monomial in t
  std::vector<R> m(N, 0), T0(N, 0), T1(N, 0), T2(N, 0);
  T0[0] = 1; T1[1] = 1;
  for (int i = 0; i < N; ++i) m[i] += c[0] * T0[i];
  if (N > 1) for (int i = 0; i < N; ++i) m[i] += c[1] * T1[i];
  for (int j = 2; j < N; ++j) {
    for (int i = 0; i < N; ++i) T2[i] = -T0[i] + (i > 0 ? 2 * T1[i - 1] : 0);
    for (int i = 0; i < N; ++i) m[i] += c[j] * T2[i];
    T0 = T1; T1 = T2;
  }
  return m;
}
int main(int argc, char** argv) {
  int which = atoi(argv[1]), n = atoi(argv[2]);
  R lo = strtold(argv[3], 0), hi = strtold(argv[4], 0);
  std::function<R(R)> f;
  // 0: erf(sqrt(s))/sqrt(s) in s; 1: erfc(a) exp(a^2) in a; 2: log(erfc(a)) in a
  if (which == 0) f = [](R s) { R x = sqrtl(s); return s == 0 ? 1.1283791670955125738961589L : erfl(x) / x; };
  if (which == 1) f = [](R a) { return erfcl(a) * expl(a * a); };
  if (which == 2) f = [](R a) { return logl(erfcl(a)); };
  if (which == 3) f = [](R a) { return logl(erfcl(a)) + a * a; };
  auto m = fit(f, lo, hi, n);
  R c = (lo + hi) / 2, h = (hi - lo) / 2;
  // max error of erf (absolute) using the polynomial with coefficients rounded to float/double
  bool dbl = argc > 5;
  R maxerr = 0, maxrel = 0;
  for (int i = 0; i <= 200000; ++i) {
    R x = lo + (hi - lo) * i / 200000;
    R t = (x - c) / h, p = 0;
    for (int j = n; j >= 0; --j) p = p * t + (dbl ? (R)(double)m[j] : (R)(float)m[j]);
    R e = fabsl(p - f(x));
    R erfv, ref;
    if (which == 0) { R a = sqrtl(x); erfv = a * p; ref = erfl(a); }
    else if (which == 1) { erfv = 1 - expl(-x * x) * p; ref = erfl(x); }
    else if (which == 2) { erfv = 1 - expl(p); ref = erfl(x); }
    else { erfv = 1 - expl(p - x * x); ref = erfl(x); }
    R err = fabsl(erfv - ref) / fabsl(ref);
    if (err > maxrel) maxrel = err;
    if (e > maxerr) maxerr = e;
  }
  printf("deg %d [%Lg,%Lg] max |p-f| %.3Le  max rel err of erf %.3Le (= %.3Lf float ulp / %.3Lf double ulp)\n", n, lo, hi, maxerr, maxrel, maxrel / 5.96e-8L, maxrel / 1.11e-16L);
  printf("c = %.21Lg, h = %.21Lg\n", c, h);
  for (int j = 0; j <= n; ++j) printf("  %.17Lg\n", m[j]);
}
