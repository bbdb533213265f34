#ifndef DCHAG_IO_SPLIT_HPP
#define DCHAG_IO_SPLIT_HPP

// Which part of a generated data set a sample index refers to. The generators map the two splits
// to disjoint sets of underlying states (disjoint time ranges for weather, disjoint random
// streams for hyperspectral scenes), so a score on Test is a held-out score.

namespace dchag {

enum class Split { Train, Test };

inline const char* split_name(Split split) { return split == Split::Train ? "train" : "test"; }

}  // namespace dchag

#endif
