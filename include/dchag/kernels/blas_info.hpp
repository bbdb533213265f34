#ifndef DCHAG_KERNELS_BLAS_INFO_HPP
#define DCHAG_KERNELS_BLAS_INFO_HPP

// Which BLAS the process runs, in one line, and a warning when it runs generic kernels on a CPU
// that has wide vector units. A BLAS picks its kernels at run time (OpenBLAS' DYNAMIC_ARCH,
// BLIS), and a library release older than the processor may not recognise it and fall back to
// kernels several times slower than the machine allows; nothing else tells a user so.
//
// The BLAS is identified through symbols looked up in the running process (dlsym with
// RTLD_DEFAULT), never linked against: the same binary works whichever BLAS the alternatives
// system or the loader put behind the Kokkos Kernels TPL, and with none of these at all.
//
//   dchag::blas_description()  e.g. "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY Haswell
//                              MAX_THREADS=64 (core Haswell, threads 2, sgemm_ from
//                              /lib/x86_64-linux-gnu/libblas.so.3, CPU: avx avx2 fma avx512f)"
//   dchag::blas_warning()      empty, or one sentence saying what is wrong and what it costs
//   dchag::blas_report()       both, as the benchmarks and the examples print them
//
// Forcing a core with OPENBLAS_CORETYPE is deliberately not suggested: older OpenBLAS builds
// compute wrong results or crash on some processors they do not know.

#include <cctype>
#include <sstream>
#include <string>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <dlfcn.h>
#define DCHAG_HAVE_DLSYM 1
#else
#define DCHAG_HAVE_DLSYM 0
#endif

namespace dchag {
namespace Impl {

inline std::string lower_case(std::string s) {
  for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

inline std::vector<std::string> split_words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(lower_case(w));
  return words;
}

// OpenBLAS x86 core names whose kernels use no AVX2 (SSE-only or AVX-only generations, and
// the fallbacks of a DYNAMIC_ARCH build that did not recognise the processor).
inline bool is_pre_avx2_openblas_core(const std::string& corename) {
  static const char* const generic[] = {
      "generic",  "unknown",   "prescott",  "core2",      "penryn",     "dunnington",
      "nehalem",  "atom",      "katmai",    "coppermine", "northwood",  "banias",
      "opteron",  "opteron_sse3", "barcelona", "bobcat",  "nano",       "sandybridge",
      "bulldozer", "piledriver", "steamroller"};
  const std::string c = lower_case(corename);
  for (const char* g : generic)
    if (c == g) return true;
  return false;
}

// The warning for an OpenBLAS core name and the CPU's features (space-separated, as
// cpu_features() gives them: "avx2", "avx512f", ...). Empty when there is nothing to warn
// about: not OpenBLAS (empty corename), a core with AVX2 kernels, or a CPU without AVX2.
inline std::string blas_warning_for(const std::string& corename, const std::string& cpu_features) {
  if (corename.empty() || !is_pre_avx2_openblas_core(corename)) return "";
  bool avx2 = false, avx512 = false;
  for (const auto& f : split_words(cpu_features)) {
    avx2 = avx2 || f == "avx2";
    avx512 = avx512 || f == "avx512f";
  }
  if (!avx2 && !avx512) return "";
  return "warning: OpenBLAS runs its generic '" + corename + "' kernels on a CPU with " +
         (avx512 ? "AVX-512" : "AVX2") +
         ": this OpenBLAS release does not recognise the processor, so GEMMs run several times "
         "slower than the machine allows; a newer OpenBLAS, or a BLAS that picks kernels from "
         "the CPU's features (e.g. BLIS), fixes it";
}

// The vector extensions of the CPU that BLAS kernels are chosen by, space-separated; empty
// where the compiler or architecture gives no portable way to ask.
inline std::string cpu_features() {
  std::string out;
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
  auto add = [&](bool has, const char* name) {
    if (has) out += (out.empty() ? "" : " ") + std::string(name);
  };
  add(__builtin_cpu_supports("avx"), "avx");
  add(__builtin_cpu_supports("avx2"), "avx2");
  add(__builtin_cpu_supports("fma"), "fma");
  add(__builtin_cpu_supports("avx512f"), "avx512f");
#endif
  return out;
}

// The file that provides sgemm_ (the Fortran BLAS entry Kokkos Kernels calls), if it can tell.
inline std::string sgemm_provider() {
#if DCHAG_HAVE_DLSYM && defined(__GLIBC__)
  void* f = dlsym(RTLD_DEFAULT, "sgemm_");
  Dl_info info;
  if (f && dladdr(f, &info) && info.dli_fname) return info.dli_fname;
#endif
  return "";
}

// A function of the BLAS that runs the GEMMs, or null when it does not define it. Looked up in
// the library that provides sgemm_ (and the libraries it depends on) where the loader can say
// which one that is: a process can have OpenBLAS loaded (a direct dependency of LAPACK, say)
// while sgemm_ resolves to BLIS, and the report must name the one that computes.
template <class F>
F blas_symbol(const char* name) {
#if DCHAG_HAVE_DLSYM
#if defined(__GLIBC__)
  const std::string where = sgemm_provider();
  if (!where.empty()) {
    void* handle = dlopen(where.c_str(), RTLD_LAZY | RTLD_NOLOAD);
    if (handle) {
      void* f = dlsym(handle, name);
      dlclose(handle);  // drops the reference RTLD_NOLOAD took; the library stays loaded
      return reinterpret_cast<F>(f);
    }
  }
#endif
  return reinterpret_cast<F>(dlsym(RTLD_DEFAULT, name));
#else
  (void)name;
  return nullptr;
#endif
}

// The OpenBLAS core name, or empty when the BLAS is not OpenBLAS.
inline std::string openblas_corename() {
  using Str = char* (*)();
  const auto f = blas_symbol<Str>("openblas_get_corename");
  const char* s = f ? f() : nullptr;
  return s ? std::string(s) : std::string();
}

}  // namespace Impl

inline std::string blas_description() {
  using Str = char* (*)();
  using Int = int (*)();
  std::string text, details;
  auto detail = [&](const std::string& d) { details += (details.empty() ? "" : ", ") + d; };
  if (const auto config = Impl::blas_symbol<Str>("openblas_get_config")) {
    const char* c = config();
    text = c ? c : "OpenBLAS";
    if (text.rfind("OpenBLAS", 0) != 0) text = "OpenBLAS " + text;
    const std::string core = Impl::openblas_corename();
    if (!core.empty()) detail("core " + core);
    if (const auto threads = Impl::blas_symbol<Int>("openblas_get_num_threads"))
      detail("threads " + std::to_string(threads()));
  } else if (const auto version = Impl::blas_symbol<Str>("bli_info_get_version_str")) {
    const char* v = version();
    text = std::string("BLIS ") + (v ? v : "");
    if (const auto threads = Impl::blas_symbol<Int>("bli_thread_get_num_threads"))
      detail("threads " + std::to_string(threads()));
  } else if (const auto threads = Impl::blas_symbol<Int>("MKL_Get_Max_Threads")) {
    text = "Intel MKL";
    detail("threads " + std::to_string(threads()));
  } else if (Impl::blas_symbol<void (*)()>("sgemm_")) {
    // A BLAS that exports nothing but the BLAS itself (Debian's BLIS libblas.so.3 hides its
    // bli_* functions): only the file name says which it is.
    const std::string file = Impl::lower_case(Impl::sgemm_provider());
    if (file.find("blis") != std::string::npos)
      text = "BLIS (version not exported)";
    else if (file.find("mkl") != std::string::npos)
      text = "Intel MKL";
    else
      text = "a BLAS that is not OpenBLAS, BLIS or MKL (reference BLAS?)";
  } else {
    text = "no BLAS found in the process (sgemm_ not loaded)";
  }
  const std::string where = Impl::sgemm_provider();
  if (!where.empty()) detail("sgemm_ from " + where);
  const std::string features = Impl::cpu_features();
  detail("CPU: " + (features.empty() ? std::string("features unknown") : features));
  return text + " (" + details + ")";
}

inline std::string blas_warning() {
  return Impl::blas_warning_for(Impl::openblas_corename(), Impl::cpu_features());
}

// What a program prints at start-up: "BLAS: <description>", and "BLAS <warning>" when there is
// one, each on its own line.
inline std::string blas_report() {
  std::string text = "BLAS: " + blas_description() + "\n";
  const std::string warning = blas_warning();
  if (!warning.empty()) text += "BLAS " + warning + "\n";
  return text;
}

}  // namespace dchag

#endif
