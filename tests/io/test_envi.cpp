#include <dchag/io/envi_dataset.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "test_common.hpp"

using dchag::EnviInterleave;
using dchag::Split;

namespace {

namespace fs = std::filesystem;

// The value the test cubes hold at (band, row, column): distinct everywhere, exact in every data
// type the tests write (integers below 2^15 plus, for the float types, a fraction of 1/8).
double cube_value(long b, long r, long c, bool fractional) {
  return double(b * 97 + r * 13 + c * 3 + 5) + (fractional ? double((b + r + c) % 8) / 8 : 0.0);
}

template <class V>
void append(std::vector<unsigned char>& out, V v, bool big_endian) {
  unsigned char bytes[sizeof(V)];
  std::memcpy(bytes, &v, sizeof v);
  if (big_endian) std::reverse(bytes, bytes + sizeof v);  // the test machines are little-endian
  out.insert(out.end(), bytes, bytes + sizeof v);
}

struct Cube {
  long bands = 5, lines = 12, samples = 10;
  int data_type = 4;
  EnviInterleave interleave = EnviInterleave::Bsq;
  int byte_order = 0;
  long header_offset = 0;
  bool wavelengths = true;
};

fs::path test_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("dchag_test_envi_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// Writes `name`.hdr and `name`.img in `dir`, an independent writer of the layouts: the values
// are emitted in the order the interleave defines, not through EnviHeader::offset.
std::string write_cube(const fs::path& dir, const std::string& name, const Cube& k,
                       const std::function<double(long, long, long)>& value = {}) {
  const bool frac = k.data_type == 4 || k.data_type == 5;
  auto at = [&](long b, long r, long c) { return value ? value(b, r, c) : cube_value(b, r, c, frac); };
  std::vector<unsigned char> bytes(std::size_t(k.header_offset), 0xAB);
  const bool be = k.byte_order == 1;
  auto put = [&](double v) {
    switch (k.data_type) {
      case 1: append(bytes, std::uint8_t(v), be); break;
      case 2: append(bytes, std::int16_t(v), be); break;
      case 3: append(bytes, std::int32_t(v), be); break;
      case 4: append(bytes, float(v), be); break;
      case 5: append(bytes, double(v), be); break;
      case 12: append(bytes, std::uint16_t(v), be); break;
      case 13: append(bytes, std::uint32_t(v), be); break;
      case 14: append(bytes, std::int64_t(v), be); break;
      case 15: append(bytes, std::uint64_t(v), be); break;
    }
  };
  if (k.interleave == EnviInterleave::Bsq) {
    for (long b = 0; b < k.bands; ++b)
      for (long r = 0; r < k.lines; ++r)
        for (long c = 0; c < k.samples; ++c) put(at(b, r, c));
  } else if (k.interleave == EnviInterleave::Bil) {
    for (long r = 0; r < k.lines; ++r)
      for (long b = 0; b < k.bands; ++b)
        for (long c = 0; c < k.samples; ++c) put(at(b, r, c));
  } else {
    for (long r = 0; r < k.lines; ++r)
      for (long c = 0; c < k.samples; ++c)
        for (long b = 0; b < k.bands; ++b) put(at(b, r, c));
  }
  std::ofstream(dir / (name + ".img"), std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  std::ofstream hdr(dir / (name + ".hdr"));
  const char* il = k.interleave == EnviInterleave::Bsq ? "bsq"
                   : k.interleave == EnviInterleave::Bil ? "bil" : "bip";
  hdr << "ENVI\ndescription = {test cube,\n  written by the test}\nsamples = " << k.samples
      << "\nlines   = " << k.lines << "\nbands = " << k.bands
      << "\nheader offset = " << k.header_offset << "\nfile type = ENVI Standard\nData Type = "
      << k.data_type << "\ninterleave = " << il << "\nbyte order = " << k.byte_order << '\n';
  if (k.wavelengths) {
    hdr << "wavelength units = Nanometers\nwavelength = {\n";
    for (long b = 0; b < k.bands; ++b) hdr << 400 + 10 * b << (b + 1 < k.bands ? ",\n" : "}\n");
  }
  return (dir / (name + ".hdr")).string();
}

void write_text(const fs::path& file, const std::string& text) { std::ofstream(file) << text; }

}  // namespace

TEST_CASE("EnviFile: every interleave, data type and byte order reads the values written") {
  const fs::path dir = test_dir("layouts");
  int cases = 0;
  for (auto il : {EnviInterleave::Bsq, EnviInterleave::Bil, EnviInterleave::Bip})
    for (int type : {1, 2, 3, 4, 5, 12, 13, 14, 15})
      for (int order : {0, 1}) {
        Cube k;
        k.interleave = il;
        k.data_type = type;
        k.byte_order = order;
        k.header_offset = type == 1 ? 0 : 37;  // an offset that breaks every alignment
        if (type == 1) k.bands = 2;            // uint8 holds values below 256 only
        const std::string name = "c" + std::to_string(cases++);
        dchag::EnviFile f(write_cube(dir, name, k));
        CHECK(f.header().bands == k.bands);
        CHECK(f.header().lines == k.lines);
        CHECK(f.header().samples == k.samples);
        CHECK(f.header().wavelengths.size() == std::size_t(k.bands));
        // A window of a band range, away from the edges.
        const long b0 = k.bands > 2 ? 1 : 0, b1 = k.bands, r0 = 3, rows = 5, c0 = 2, cols = 7;
        std::vector<double> out((b1 - b0) * rows * cols);
        f.read(b0, b1, r0, rows, c0, cols, out.data());
        const bool frac = type == 4 || type == 5;
        double worst = 0;
        for (long b = b0; b < b1; ++b)
          for (long r = 0; r < rows; ++r)
            for (long c = 0; c < cols; ++c)
              worst = std::max(worst, std::abs(out[((b - b0) * rows + r) * cols + c] -
                                               cube_value(b, r0 + r, c0 + c, frac)));
        INFO("interleave ", int(il), " data type ", type, " byte order ", order);
        CHECK(worst == 0);
      }
}

TEST_CASE("EnviFile: the data file is found from the header and the header from the data file") {
  const fs::path dir = test_dir("names");
  const std::string hdr = write_cube(dir, "scene", Cube{});
  dchag::EnviFile a(hdr), b((dir / "scene.img").string());
  CHECK(a.data_path() == (dir / "scene.img").string());
  CHECK(b.header_path() == hdr);
  fs::rename(dir / "scene.img", dir / "scene.dat");
  CHECK(dchag::EnviFile(hdr).data_path() == (dir / "scene.dat").string());
  fs::rename(dir / "scene.dat", dir / "scene");
  CHECK(dchag::EnviFile(hdr).data_path() == (dir / "scene").string());
}

TEST_CASE("EnviFile: bad headers and truncated data name what is wrong") {
  const fs::path dir = test_dir("bad");
  const std::string good = write_cube(dir, "good", Cube{});
  std::ifstream in(good);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto with = [&](const std::string& from, const std::string& to) {
    std::string t = text;
    const auto at = t.find(from);
    REQUIRE(at != std::string::npos);
    return t.replace(at, from.size(), to);
  };
  fs::copy_file(dir / "good.img", dir / "bad.img");
  auto refused = [&](const std::string& header, const char* fragment) {
    write_text(dir / "bad.hdr", header);
    INFO(fragment);
    CHECK_THROWS_WITH_AS(dchag::EnviFile((dir / "bad.hdr").string()), doctest::Contains(fragment),
                         dchag::Error);
  };
  refused("ENVY\n" + text.substr(5), "the first line must be 'ENVI'");
  refused(with("samples = 10\n", ""), "no 'samples' entry");
  refused(with("bands = 5", "bands = five"), "'bands = five' is not an integer");
  refused(with("bands = 5", "bands = 0"), "bands = 0 is outside");
  refused(with("Data Type = 4", "Data Type = 6"), "data type 6 is complex");
  refused(with("Data Type = 4", "Data Type = 7"), "unknown data type 7");
  refused(with("interleave = bsq", "interleave = bxx"), "interleave 'bxx' is not bsq, bil or bip");
  refused(with("byte order = 0", "byte order = 2"), "byte order = 2 is outside");
  refused(with("wavelength = {\n400,", "wavelength = {\n"), "4 wavelengths for 5 bands");
  refused(with("wavelength = {\n400,", "wavelength = {\nfour hundred,"),
          "wavelength entry 'four hundred' is not a number");
  refused(text + "band names = {a, b,\n c", "is never closed");
  refused(with("lines   = 12", "lines 12"), "is not 'key = value'");
  // The header describes more data than the file holds.
  refused(with("lines   = 12", "lines = 13"), "bytes (truncated?)");
  write_text(dir / "bad.hdr", text);
  fs::resize_file(dir / "bad.img", fs::file_size(dir / "bad.img") - 1);
  CHECK_THROWS_WITH_AS(dchag::EnviFile((dir / "bad.hdr").string()),
                       doctest::Contains("2399 bytes, but its header"), dchag::Error);
  fs::remove(dir / "bad.img");
  CHECK_THROWS_WITH_AS(dchag::EnviFile((dir / "bad.hdr").string()),
                       doctest::Contains("no data file next to the header"), dchag::Error);
  CHECK_THROWS_WITH_AS(dchag::EnviFile((dir / "missing.hdr").string()),
                       doctest::Contains("no data file"), dchag::Error);
  dchag::EnviFile f(good);
  std::vector<double> out(100);
  CHECK_THROWS_WITH_AS(f.read(3, 6, 0, 1, 0, 1, out.data()),
                       doctest::Contains("bands [3, 6) are not within its 5 bands"), dchag::Error);
  CHECK_THROWS_WITH_AS(f.read(0, 1, 10, 3, 0, 1, out.data()),
                       doctest::Contains("window rows [10, 13)"), dchag::Error);
}

TEST_CASE("EnviFile: a range of bands reads only those bands' bytes") {
  // Bands outside the range hold NaN in a float cube: reading [1, 3) of any interleave must
  // never see them.
  const fs::path dir = test_dir("own_bands");
  for (auto il : {EnviInterleave::Bsq, EnviInterleave::Bil, EnviInterleave::Bip}) {
    Cube k;
    k.interleave = il;
    const std::string name = "c" + std::to_string(int(il));
    dchag::EnviFile f(write_cube(dir, name, k, [](long b, long r, long c) {
      return b == 1 || b == 2 ? cube_value(b, r, c, true)
                              : std::numeric_limits<double>::quiet_NaN();
    }));
    std::vector<double> out(2 * k.lines * k.samples);
    f.read(1, 3, 0, k.lines, 0, k.samples, out.data());
    bool finite = true;
    for (double v : out) finite = finite && std::isfinite(v);
    CHECK(finite);
    CHECK(out[0] == cube_value(1, 0, 0, true));
    CHECK(out.back() == cube_value(2, k.lines - 1, k.samples - 1, true));
  }
}

TEST_CASE_TEMPLATE("EnviDataset: tiles, splits, statistics and band ranges", T, float, double) {
  using Space = Kokkos::DefaultHostExecutionSpace;
  const fs::path dir = test_dir("dataset");
  Cube a;  // 12 x 10 pixels: 3 x 2 tiles of 4 x 5
  a.interleave = EnviInterleave::Bil;
  Cube b = a;  // 8 x 15: 2 x 3 tiles
  b.lines = 8;
  b.samples = 15;
  b.interleave = EnviInterleave::Bip;
  b.data_type = 2;
  b.byte_order = 1;
  dchag::EnviDatasetConfig cfg;
  cfg.files = {write_cube(dir, "a", a), write_cube(dir, "b", b)};
  cfg.height = 4;
  cfg.width = 5;
  cfg.test_fraction = 0.34;  // floor(0.34 * 6) = 2 Test tiles in each scene
  dchag::EnviDataset<T> data(cfg);
  REQUIRE(data.bands() == 5);
  CHECK(data.size(Split::Train) == 8);
  CHECK(data.size(Split::Test) == 4);
  // Test tiles are each scene's last ones: scene a's bottom row of tiles.
  CHECK(data.tile(Split::Test, 0).file == 0);
  CHECK(data.tile(Split::Test, 0).row == 8);
  CHECK(data.tile(Split::Test, 0).column == 0);
  CHECK(data.tile(Split::Test, 3).file == 1);
  CHECK(data.tile(Split::Test, 3).row == 4);
  CHECK(data.tile(Split::Test, 3).column == 10);
  CHECK(data.wavelengths().size() == 5);
  CHECK(data.wavelength_units() == "Nanometers");

  // Statistics: every Train pixel of every band, computed directly.
  for (int band = 0; band < 5; ++band) {
    double sum = 0, sq = 0, n = 0;
    for (std::size_t i = 0; i < data.size(Split::Train); ++i) {
      const auto& t = data.tile(Split::Train, i);
      for (long r = 0; r < 4; ++r)
        for (long c = 0; c < 5; ++c) {
          const double v = cube_value(band, t.row + r, t.column + c, t.file == 0);
          sum += v;
          sq += v * v;
          n += 1;
        }
    }
    const double mean = sum / n, sd = std::sqrt(sq / n - mean * mean);
    CHECK(data.band_mean()[band] == doctest::Approx(mean).epsilon(1e-12));
    CHECK(data.band_std()[band] == doctest::Approx(sd).epsilon(1e-9));
  }

  // Samples: the normalised values of their tile; a band range equals the same bands of all.
  dchag::View4<T, Space> all("all", 3, 5, 4, 5), part("part", 3, 2, 4, 5);
  const std::vector<std::size_t> pick = {3, 0, 1};
  data.fill(Split::Test, pick, all);
  data.fill(Split::Test, pick, part, 2);
  double worst = 0, worst_part = 0;
  for (std::size_t s = 0; s < pick.size(); ++s) {
    const auto& t = data.tile(Split::Test, pick[s]);
    for (int band = 0; band < 5; ++band)
      for (int r = 0; r < 4; ++r)
        for (int c = 0; c < 5; ++c) {
          const double want = (cube_value(band, t.row + r, t.column + c, t.file == 0) -
                               data.band_mean()[band]) / data.band_std()[band];
          worst = std::max(worst, std::abs(double(all(s, band, r, c)) - want));
          if (band >= 2 && band < 4)
            worst_part = std::max(worst_part, std::abs(double(part(s, band - 2, r, c)) -
                                                       double(all(s, band, r, c))));
        }
  }
  CHECK(worst < 10 * dchag_test::tol<T>());
  CHECK(worst_part == 0);

  // A process that reads bands [2, 4) only: the same statistics and samples for those bands.
  dchag::EnviDatasetConfig mine = cfg;
  mine.band_begin = 2;
  mine.band_end = 4;
  dchag::EnviDataset<T> own(mine);
  REQUIRE(own.band_mean().size() == 2);
  CHECK(own.band_mean()[0] == data.band_mean()[2]);
  CHECK(own.band_std()[1] == data.band_std()[3]);
  dchag::View4<T, Space> own_part("own_part", 3, 2, 4, 5);
  own.fill(Split::Test, pick, own_part, 2);
  CHECK(std::memcmp(own_part.data(), part.data(), part.size() * sizeof(T)) == 0);
  CHECK_THROWS_WITH_AS(own.fill(Split::Test, pick, part, 1),
                       doctest::Contains("bands [1, 3) are not within the bands [2, 4)"),
                       dchag::Error);
  CHECK_THROWS_WITH_AS(own.fill(Split::Test, {4, 0, 1}, own_part, 2),
                       doctest::Contains("test sample 4 does not exist"), dchag::Error);
}

TEST_CASE("EnviDataset: bad data sets and non-finite values are refused with their location") {
  using Space = Kokkos::DefaultHostExecutionSpace;
  const fs::path dir = test_dir("dataset_bad");
  Cube k;
  const std::string good = write_cube(dir, "good", k);
  Cube other = k;
  other.bands = 4;
  other.wavelengths = false;
  const std::string four = write_cube(dir, "four", other);
  dchag::EnviDatasetConfig cfg;
  cfg.height = 4;
  cfg.width = 5;
  cfg.files = {good, four};
  CHECK_THROWS_WITH_AS(dchag::EnviDataset<float>{cfg},
                       doctest::Contains("has 4 bands, but"), dchag::Error);
  Cube shifted = k;
  const std::string moved = write_cube(dir, "moved", shifted);
  {
    std::ifstream in(moved);
    std::string t((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    in.close();
    t.replace(t.find("400,"), 4, "401,");
    write_text(moved, t);
  }
  cfg.files = {good, moved};
  CHECK_THROWS_WITH_AS(dchag::EnviDataset<float>{cfg},
                       doctest::Contains("wavelengths of"), dchag::Error);
  cfg.files = {good};
  cfg.height = 13;
  CHECK_THROWS_WITH_AS(dchag::EnviDataset<float>{cfg},
                       doctest::Contains("smaller than one 13x5 tile"), dchag::Error);
  cfg.height = 12;
  cfg.width = 10;  // one tile: no Test split possible
  CHECK_THROWS_WITH_AS(dchag::EnviDataset<float>{cfg},
                       doctest::Contains("too few for a Test split"), dchag::Error);
  cfg.height = 4;
  cfg.width = 5;
  cfg.band_begin = 3;
  cfg.band_end = 9;
  CHECK_THROWS_WITH_AS(dchag::EnviDataset<float>{cfg},
                       doctest::Contains("bands [3, 9) are not a range"), dchag::Error);
  cfg.band_begin = 0;
  cfg.band_end = -1;

  // NaN in a Train tile stops the statistics pass; NaN in a Test tile stops the fill; both name
  // band, line and sample.
  const std::string nan_train = write_cube(dir, "nan_train", k, [](long b, long r, long c) {
    return b == 3 && r == 2 && c == 7 ? std::nan("") : cube_value(b, r, c, true);
  });
  cfg.files = {nan_train};
  CHECK_THROWS_WITH_AS(dchag::EnviDataset<float>{cfg},
                       doctest::Contains("holds nan at band 3, line 2, sample 7"), dchag::Error);
  const std::string nan_test = write_cube(dir, "nan_test", k, [](long b, long r, long c) {
    return b == 0 && r == 9 && c == 6 ? INFINITY : cube_value(b, r, c, true);
  });
  cfg.files = {nan_test};
  dchag::EnviDataset<float> data(cfg);  // the statistics see Train tiles only
  dchag::View4<float, Space> x("x", 1, 5, 4, 5);
  CHECK_THROWS_WITH_AS(data.fill(Split::Test, {0}, x),
                       doctest::Contains("holds inf at band 0, line 9, sample 6"), dchag::Error);
}

TEST_CASE("EnviDataset: a band constant over the Train tiles is centred, not divided by zero") {
  using Space = Kokkos::DefaultHostExecutionSpace;
  const fs::path dir = test_dir("constant");
  Cube k;
  dchag::EnviDatasetConfig cfg;
  cfg.files = {write_cube(dir, "c", k, [](long b, long r, long c) {
    return b == 2 ? 7.0 : cube_value(b, r, c, true);
  })};
  cfg.height = 4;
  cfg.width = 5;
  dchag::EnviDataset<double> data(cfg);
  CHECK(data.band_std()[2] == 0);
  CHECK(data.band_mean()[2] == 7.0);
  dchag::View4<double, Space> x("x", 1, 5, 4, 5);
  data.fill(Split::Train, {1}, x);
  bool zero = true;
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 5; ++c) zero = zero && x(0, 2, r, c) == 0.0;
  CHECK(zero);
}
