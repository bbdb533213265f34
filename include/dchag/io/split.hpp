#ifndef DCHAG_IO_SPLIT_HPP
#define DCHAG_IO_SPLIT_HPP

// Which part of a data set a sample index refers to. The generators map Train and Test to
// disjoint sets of underlying states (disjoint time ranges for weather, disjoint random streams
// for hyperspectral scenes), so a score on Test is a held-out score; they have no Validation
// split and refuse it. Data read from files (WeatherBench) splits by year into all three.

namespace dchag {

enum class Split { Train, Test, Validation };

inline const char* split_name(Split split) {
  return split == Split::Train ? "train" : split == Split::Test ? "test" : "validation";
}

}  // namespace dchag

#endif
