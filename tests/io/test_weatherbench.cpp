#include <dchag/io/weatherbench.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "test_common.hpp"
#include "weatherbench/weatherbench_writer.hpp"

using dchag::Split;
namespace fs = std::filesystem;

namespace {

using Host = Kokkos::DefaultHostExecutionSpace;
constexpr int kH = 6, kW = 8, kPerYear = 20;
constexpr double kStep = 6.0;  // hours

// A fresh data set per test: 4 years 1979-1982 of 20 times 6 h apart.
struct DataDir {
  std::string dir;
  explicit DataDir(const std::string& name, int years = 4) {
    dir = (fs::temp_directory_path() / ("dchag_wb_" + name + "_" + std::to_string(::getpid())))
              .string();
    fs::remove_all(dir);
    wb_test::write_sample_dataset(dir, kH, kW, years, kPerYear, kStep);
  }
  ~DataDir() { fs::remove_all(dir); }
  std::string file(const std::string& folder, int year) const {
    return dir + "/" + folder + "/" + folder + "_" + std::to_string(year) + "_test.nc";
  }
};

dchag::WeatherBenchConfig config_of(const DataDir& d) {
  dchag::WeatherBenchConfig c;
  c.directory = d.dir;
  c.variables = {"2m_temperature", "geopotential_500", "temperature_850", "geopotential_850"};
  c.lead_hours = 12;
  return c;
}

// Which writer variable and level each channel of config_of is.
const int kVarId[] = {0, 1, 2, 1};
const double kLevel[] = {0, 500, 850, 850};

double hours_at(std::int64_t time) { return time * kStep; }  // the writer's axis is continuous

}  // namespace

TEST_CASE("WeatherBench reads exactly the values written, at t and t + lead") {
  DataDir d("values");
  auto cfg = config_of(d);
  cfg.normalize = false;
  dchag::WeatherBench<double> data(cfg);
  CHECK(data.channels() == 4);
  CHECK(data.height() == kH);
  CHECK(data.width() == kW);
  CHECK(data.hours_per_step() == doctest::Approx(kStep));
  CHECK(data.lead_steps(Split::Train, 0) == 2);
  REQUIRE(data.latitudes().size() == std::size_t(kH));
  CHECK(data.latitudes()[0] == doctest::Approx(-90 + 15.0));
  CHECK(data.longitudes()[1] == doctest::Approx(45.0));

  const std::vector<std::size_t> idx = {0, 17, 19, 37};  // 17 + 2 and 19 cross into 1980
  dchag::View4<double, Host> x("x", idx.size(), 4, kH, kW), y("y", idx.size(), 4, kH, kW);
  dchag::View1<double, Host> lead("lead", idx.size());
  data.fill(Split::Train, idx, x, y, lead);
  int bad = 0;
  for (std::size_t b = 0; b < idx.size(); ++b) {
    const std::int64_t t = data.time_index(Split::Train, idx[b]);
    CHECK(t == std::int64_t(idx[b]));
    CHECK(lead(b) == doctest::Approx(12.0 / 100));
    for (int c = 0; c < 4; ++c)
      for (int i = 0; i < kH; ++i)
        for (int j = 0; j < kW; ++j) {
          bad += x(b, c, i, j) !=
                 double(wb_test::sample_field(kVarId[c], hours_at(t), kLevel[c], i, j));
          bad += y(b, c, i, j) !=
                 double(wb_test::sample_field(kVarId[c], hours_at(t + 2), kLevel[c], i, j));
        }
  }
  CHECK(bad == 0);

  // state() at any global time: the first Test time is 1982's first.
  const std::int64_t t0 = data.time_index(Split::Test, 0);
  CHECK(t0 == 3 * kPerYear);
  CHECK(data.year_of(t0) == 1982);
  dchag::View3<double, Host> s("s", 2, kH, kW);
  data.state(t0, s, 2);
  CHECK(s(1, 3, 4) == double(wb_test::sample_field(1, hours_at(t0), 850, 3, 4)));
}

TEST_CASE("WeatherBench channel subsets equal the full read and read only their channels") {
  DataDir d("subset");
  auto cfg = config_of(d);
  const std::vector<std::size_t> idx = {3, 11};
  dchag::View4<float, Host> x("x", 2, 4, kH, kW), y("y", 2, 4, kH, kW);
  dchag::View1<float, Host> lead("lead", 2);
  {  // closed before a file is rewritten below (HDF5 locks open files)
  dchag::WeatherBench<float> full(cfg);
  full.fill(Split::Validation, idx, x, y, lead);
  for (int begin : {0, 1, 3}) {
    const int n = begin == 3 ? 1 : 2;
    dchag::View4<float, Host> xs("xs", 2, n, kH, kW), ys("ys", 2, n, kH, kW);
    full.fill(Split::Validation, idx, xs, ys, lead, begin);
    int diff = 0;
    for (int b = 0; b < 2; ++b)
      for (int c = 0; c < n; ++c)
        for (int i = 0; i < kH; ++i)
          for (int j = 0; j < kW; ++j)
            diff += xs(b, c, i, j) != x(b, begin + c, i, j) ||
                    ys(b, c, i, j) != y(b, begin + c, i, j);
    CHECK(diff == 0);
  }
  }
  // Spoil 2m_temperature of the Test year on disk: a reader of the other channels never sees it,
  // a reader of channel 0 does.
  wb_test::FileSpec s;
  s.var = "t2m";
  s.times = wb_test::year_times(1982, kPerYear, kStep);
  s.grid = wb_test::grid(kH, kW);
  s.value = [](double t, double, int i, int j) {
    return t > 0 && i == 2 && j == 5 ? NAN : wb_test::sample_field(0, t, 0, i, j);
  };
  wb_test::write_file(d.file("2m_temperature", 1982), s);
  dchag::WeatherBench<float> spoiled(cfg);  // statistics from the (intact) Train years' file
  dchag::View4<float, Host> x3("x3", 2, 3, kH, kW), y3("y3", 2, 3, kH, kW);
  spoiled.fill(Split::Test, idx, x3, y3, lead, 1);
  const double raw =
      wb_test::sample_field(1, hours_at(spoiled.time_index(Split::Test, 11)), 500, 0, 0);
  CHECK(x3(1, 0, 0, 0) ==
        doctest::Approx((raw - spoiled.channel_mean()[1]) / spoiled.channel_std()[1])
            .epsilon(1e-5));
  dchag::View4<float, Host> x1("x1", 2, 1, kH, kW), y1("y1", 2, 1, kH, kW);
  CHECK_THROWS_WITH_AS(spoiled.fill(Split::Test, idx, x1, y1, lead, 0),
                       doctest::Contains("point 21 is nan, expected a finite value"), dchag::Error);
}

TEST_CASE("WeatherBench statistics: one pass equals a direct computation, saved and reused") {
  DataDir d("stats");
  auto cfg = config_of(d);
  dchag::WeatherBench<double> data(cfg);
  CHECK(data.statistics_computed());
  CHECK(fs::exists(d.dir + "/dchag_statistics.csv"));
  CHECK(data.years_of(Split::Train).first == 1979);
  CHECK(data.years_of(Split::Train).last == 1980);
  for (int c = 0; c < 4; ++c) {
    // Two-pass reference over every Train time (1979 and 1980) and point, from the writer's
    // function directly.
    std::vector<double> v;
    for (int t = 0; t < 2 * kPerYear; ++t)
      for (int i = 0; i < kH; ++i)
        for (int j = 0; j < kW; ++j)
          v.push_back(wb_test::sample_field(kVarId[c], hours_at(t), kLevel[c], i, j));
    double m = 0, q = 0;
    for (double a : v) m += a;
    m /= v.size();
    for (double a : v) q += (a - m) * (a - m);
    const double sd = std::sqrt(q / v.size());
    CHECK(data.channel_mean()[c] == doctest::Approx(m).epsilon(1e-12));
    CHECK(data.channel_std()[c] == doctest::Approx(sd).epsilon(1e-9));
  }
  // Normalised values use them.
  dchag::View4<double, Host> x("x", 1, 4, kH, kW), y("y", 1, 4, kH, kW);
  dchag::View1<double, Host> lead("lead", 1);
  data.fill(Split::Train, {5}, x, y, lead);
  CHECK(x(0, 1, 2, 3) == doctest::Approx((wb_test::sample_field(1, hours_at(5), 500, 2, 3) -
                                          data.channel_mean()[1]) / data.channel_std()[1]));

  // A second construction reads the file: prove it by editing a value in it.
  dchag::WeatherBench<double> again(cfg);
  CHECK_FALSE(again.statistics_computed());
  CHECK(again.channel_mean() == data.channel_mean());
  CHECK(again.channel_std() == data.channel_std());
  std::ifstream in(d.dir + "/dchag_statistics.csv");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  in.close();
  const std::string key = "temperature_850,1979,1980,";
  const auto at = text.find(key);
  REQUIRE(at != std::string::npos);
  const auto line_end = text.find('\n', at);
  text.replace(at, line_end - at, key + "1920,123.5,7.25");
  std::ofstream(d.dir + "/dchag_statistics.csv") << text;
  dchag::WeatherBench<double> edited(cfg);
  CHECK_FALSE(edited.statistics_computed());
  CHECK(edited.channel_mean()[2] == 123.5);
  CHECK(edited.channel_std()[2] == 7.25);
  CHECK(edited.channel_mean()[0] == data.channel_mean()[0]);

  // Other Train years are other rows: computed again, the earlier rows kept.
  auto other = cfg;
  other.train_years = {1979, 1979};
  other.validation_years = {1980, 1980};
  other.test_years = {1981, 1982};
  dchag::WeatherBench<double> one_year(other);
  CHECK(one_year.statistics_computed());
  CHECK(one_year.channel_mean()[0] != data.channel_mean()[0]);
  CHECK(dchag::WeatherBench<double>(cfg).channel_mean()[2] == 123.5);

  // Without permission to compute, missing rows are an error.
  auto strict = cfg;
  strict.variables = {"specific_humidity_850"};
  strict.compute_statistics = false;
  CHECK_THROWS_WITH_AS(dchag::WeatherBench<double>{strict},
                       doctest::Contains("has no row for specific_humidity_850"), dchag::Error);
  // A damaged statistics file is named.
  std::ofstream(d.dir + "/dchag_statistics.csv") << "2m_temperature,1979,1980,x,1,2\n";
  CHECK_THROWS_WITH_AS(dchag::WeatherBench<double>{cfg},
                       doctest::Contains("line 1 of the statistics file"), dchag::Error);
}

TEST_CASE("WeatherBench splits by year") {
  DataDir d("split");
  auto cfg = config_of(d);
  cfg.variables = {"2m_temperature"};
  dchag::WeatherBench<float> data(cfg);
  // Default: Train 1979-1980, Validation 1981, Test 1982; each loses the lead's 2 times.
  CHECK(data.years() == std::vector<int>{1979, 1980, 1981, 1982});
  CHECK(data.size(Split::Train) == std::size_t(2 * kPerYear - 2));
  CHECK(data.size(Split::Validation) == std::size_t(kPerYear - 2));
  CHECK(data.size(Split::Test) == std::size_t(kPerYear - 2));
  CHECK(data.year_of(data.time_index(Split::Train, data.size(Split::Train) - 1) + 2) == 1980);
  CHECK(data.year_of(data.time_index(Split::Validation, 0)) == 1981);
  CHECK(data.year_of(data.time_index(Split::Validation, kPerYear - 3) + 2) == 1981);
  CHECK(data.year_of(data.time_index(Split::Test, 0)) == 1982);
  CHECK_THROWS_WITH_AS(data.time_index(Split::Test, kPerYear - 2),
                       doctest::Contains("test index 18 out of range, expected < 18"),
                       dchag::Error);

  auto explicit_years = cfg;
  explicit_years.train_years = {1980, 1982};
  explicit_years.validation_years = {1979, 1979};
  explicit_years.test_years = {1979, 1979};
  CHECK_THROWS_WITH_AS(dchag::WeatherBench<float>{explicit_years},
                       doctest::Contains("test years 1979-1979 overlap the validation years"),
                       dchag::Error);
  explicit_years.test_years = {1983, 1983};
  CHECK_THROWS_WITH_AS(dchag::WeatherBench<float>{explicit_years},
                       doctest::Contains("test years 1983-1983 invalid"), dchag::Error);
  explicit_years.train_years = {1981, 1982};
  explicit_years.test_years = {1980, 1980};
  dchag::WeatherBench<float> swapped(explicit_years);
  CHECK(swapped.size(Split::Train) == std::size_t(2 * kPerYear - 2));
  CHECK(swapped.year_of(swapped.time_index(Split::Train, 0)) == 1981);
  CHECK(swapped.year_of(swapped.time_index(Split::Test, 0)) == 1980);

  DataDir two("two_years", 2);
  auto short_cfg = config_of(two);
  CHECK_THROWS_WITH_AS(dchag::WeatherBench<float>{short_cfg},
                       doctest::Contains("expected at least 3 for the default split"),
                       dchag::Error);
}

TEST_CASE("WeatherBench refuses bad data sets with a message naming the problem") {
  DataDir d("bad");
  auto base = config_of(d);
  auto expect = [&](dchag::WeatherBenchConfig cfg, const std::string& fragment) {
    CAPTURE(fragment);
    CHECK_THROWS_WITH_AS(dchag::WeatherBench<float>{cfg}, doctest::Contains(fragment.c_str()),
                         dchag::Error);
  };
  auto with = [&](std::vector<std::string> vars) {
    auto c = base;
    c.variables = std::move(vars);
    return c;
  };
  expect(with({"10m_u_component_of_wind"}), "no folder for variable '10m_u_component_of_wind'");
  expect(with({"geopotential_300"}), "has no level 300 (levels: 500, 850)");
  expect(with({"geopotential"}), "has a level dimension 'level', expected a name with _LEVEL");
  expect(with({"2m_temperature_500"}), "has no level dimension, expected the name 2m_temperature");
  {
    auto c = base;
    c.height = kH + 1;
    expect(c, "has 6 latitudes, expected the model's height 7");
    c.height = 0;
    c.width = 4;
    expect(c, "has 8 longitudes, expected the model's width 4");
    c = base;
    c.lead_hours = 9;
    expect(c, "lead_hours = 9 is not a whole number of the data's time steps of 6 h");
    c.lead_hours = 6 * kPerYear;
    expect(c, "too few for a lead of 20 steps");
  }
  auto spec = [&](const std::string& var, std::vector<double> levels, int year) {
    wb_test::FileSpec s;
    s.var = var;
    s.levels = std::move(levels);
    s.times = wb_test::year_times(year, kPerYear, kStep);
    s.grid = wb_test::grid(kH, kW);
    s.value = [](double t, double l, int i, int j) { return wb_test::sample_field(2, t, l, i, j); };
    return s;
  };
  const std::string t1980 = d.file("temperature", 1980);
  auto restore = [&] { wb_test::write_file(t1980, spec("t", {500, 850}, 1980)); };
  {  // another grid for one variable
    auto s = spec("t", {500, 850}, 1980);
    s.grid = wb_test::grid(kH, kW + 2);
    wb_test::write_file(t1980, s);
    expect(base, "the grid of " + t1980 + " (6 x 10) differs from that of");
    s.grid = wb_test::grid(kH, kW);
    s.grid.lat[0] += 1.0;  // same size, other latitudes
    wb_test::write_file(t1980, s);
    expect(base, "the grid of " + t1980 + " (6 x 8) differs");
  }
  {  // other times
    auto s = spec("t", {500, 850}, 1980);
    s.times[3] += 1.0;
    wb_test::write_file(t1980, s);
    expect(base, "the times of " + t1980 + " (20 times, 'hours since 1979-01-01') differ from");
    s.times.pop_back();
    wb_test::write_file(t1980, s);
    expect(base, "the times of " + t1980 + " (19 times");
    // The same uneven times in every variable: not evenly spaced.
    auto u = base;
    u.variables = {"temperature_850"};
    s = spec("t", {500, 850}, 1980);
    s.times[3] += 1.0;
    wb_test::write_file(t1980, s);
    expect(u, "the times of " + t1980 + " are not evenly spaced: 7 h between times 2 and 3");
    s = spec("t", {500, 850}, 1980);
    for (double& t : s.times) t += 24;
    wb_test::write_file(t1980, s);
    expect(u, "starts 30 h after the end of");
  }
  {  // no data variable, two data variables, a missing year
    auto s = spec("t", {500, 850}, 1980);
    wb_test::write_file(t1980, s);
    fs::remove(t1980);
    expect(base, "variable 'temperature_850' has the years 1979-1982 (3 files), but "
                 "'2m_temperature' has 1979-1982 (4 files)");
    wb_test::write_file(d.dir + "/temperature/temperature_1980_copy.nc", s);
    wb_test::write_file(t1980, s);
    expect(base, "two files for 1980 in");
    fs::remove(d.dir + "/temperature/temperature_1980_copy.nc");
    std::ofstream(d.dir + "/temperature/temperature_notes.nc") << "x";
    expect(base, "cannot tell the year of");
    fs::remove(d.dir + "/temperature/temperature_notes.nc");
  }
  {  // NaN in the Train years: the statistics pass finds it
    auto s = spec("t", {500, 850}, 1980);
    s.value = [](double t, double l, int i, int j) {
      return l == 850 && i == 1 && j == 0 && t > 20 * 6 + 30 ? NAN
                                                            : wb_test::sample_field(2, t, l, i, j);
    };
    wb_test::write_file(t1980, s);
    fs::remove(d.dir + "/dchag_statistics.csv");
    expect(base, "t in " + t1980 + " at time 6, level 850, point 8 is nan");
    // A fill value is missing data too.
    restore();
  }
  {  // truncated and corrupt files
    restore();
    const auto size = fs::file_size(t1980);
    fs::resize_file(t1980, size / 2);
    expect(base, "cannot open '" + t1980 + "'");
    std::ofstream(t1980, std::ios::binary) << "this is not a netCDF file";
    expect(base, "cannot open '" + t1980 + "'");
    // The classic format, truncated inside its header. (netCDF reads the data of a classic file
    // cut after its header as zeros without an error; netCDF-4 files, as WeatherBench ships,
    // fail to open as soon as anything is missing.)
    auto s = spec("t", {500, 850}, 1980);
    s.format = 0;
    wb_test::write_file(t1980, s);
    fs::resize_file(t1980, 100);
    expect(base, "cannot open '" + t1980 + "'");
  }
  {  // the default fill value where data was never written
    auto s = spec("t", {500, 850}, 1980);
    s.value = [](double t, double l, int i, int j) {
      return t == 20 * 6 && l == 500 && i == 0 && j == 3 ? NC_FILL_FLOAT
                                                        : wb_test::sample_field(2, t, l, i, j);
    };
    wb_test::write_file(t1980, s);
    fs::remove(d.dir + "/dchag_statistics.csv");
    auto c = base;
    c.variables = {"temperature_500"};
    expect(c, "at time 0, level 500, point 3 is 9.96921e+36 (the fill value: missing or never "
              "written data, or a truncated file)");
  }
  restore();
  CHECK_NOTHROW(dchag::WeatherBench<float>{base});
}
