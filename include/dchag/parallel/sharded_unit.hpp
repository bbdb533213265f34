#ifndef DCHAG_PARALLEL_SHARDED_UNIT_HPP
#define DCHAG_PARALLEL_SHARDED_UNIT_HPP

// Model sharding (FSDP, ZeRO-3) of one unit of a model (a transformer block, the embeddings,
// the head) over the fsdp group of p ranks.
//
// The unit's parameters (this rank's tensor-parallel share of them) are laid end to end in one
// flat buffer of N values, padded to a multiple of p, and rank r keeps only slice r of it: the
// values, the gradients and, because parameters() lists only the slice, the optimizer's moments.
// The layers are not rewritten for this: each lists its parameter storage through
// visit_storage(f), calling f(value, grad) for every pair of views it owns, and the unit
// re-points those views, at a gathered full buffer while the unit computes, and at nothing
// (null data, same extents) the rest of the time:
//   gather()          all-gather the slices into a full buffer, point the layers at it;
//   release()         point the layers at nothing, free the full buffers;
//   begin_backward()  gather unless gathered, point the gradients at a zeroed full buffer;
//   end_backward()    reduce-scatter (sum over the group) the full gradient, add this rank's
//                     slice to its gradient slice, release.
// Ranks of one fsdp group train on different samples (sharding is data parallelism that also
// splits the model), so end_backward() sums their gradients; the averaging is done with the
// data-parallel one (train/gradient_sync.hpp).
//
// The unit never stores its layers: every call that touches them takes `visit`, a callable with
// visit(f) -> layer.visit_storage(f) for each layer of the unit, so the owner may move.
//
// Overlap (dchag::set_fsdp_overlap(true)): start_gather() issues the all-gather non-blocking
// (the next gather() only waits for it), so a model can have the next unit's parameters travel
// while this unit computes; start_end_backward() issues the gradient reduce-scatter
// non-blocking and releases the unit, finish_end_backward() waits for it and accumulates, so
// the reduction of one unit can travel while the next one computes its backward. It costs
// memory: one more unit's full values (forward) and full gradient (backward) live at once.
//
// A model holds a unit as std::optional<ShardedUnit> (empty unless sharded) and uses it through
// Impl::GatheredScope (gathered for a scope, released when it ends) and Impl::BackwardScope
// (begin_backward, then an explicit finish(): the reduce-scatter is a collective, which a
// destructor must not run).

#include <Kokkos_Core.hpp>
#include <algorithm>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <string>
#include <utility>
#include <vector>

#include <dchag/core/error.hpp>
#include <dchag/core/parameter.hpp>
#include <dchag/core/view.hpp>
#include <dchag/kernels/reductions.hpp>
#include <dchag/parallel/collectives.hpp>
#include <dchag/parallel/communicator.hpp>

namespace dchag {
namespace Impl {
inline bool& fsdp_overlap_flag() {
  static bool on = false;
  return on;
}
}  // namespace Impl

// Whether the models overlap their FSDP communication with compute: the encoder gathers the next
// block while a block computes and reduce-scatters a block's gradient while the next block
// computes its backward (see ShardedUnit). Process-wide, off by default: it holds the next
// unit's values and the previous unit's gradient whole beside the current unit (dchag::plan
// counts them when asked to, and by default follows this setting), and with an MPI that
// progresses non-blocking collectives only inside MPI calls (Open MPI 4 without a progress
// thread) the transfers barely overlap: measured on 2 to 4 CPU ranks, the step time did not
// change.
// The results are the same either way (the same sums, possibly added in another order by MPI's
// non-blocking algorithms). Every rank must choose the same: MPI does not match a blocking
// collective on one rank with a non-blocking one on another.
inline void set_fsdp_overlap(bool on) { Impl::fsdp_overlap_flag() = on; }
inline bool fsdp_overlap() { return Impl::fsdp_overlap_flag(); }

namespace Impl {

// The part [lo, hi) (row-major order) of `box`, as boxes of the same tensor whose row-major
// contents, one after the other, are that part: at most 2 * rank - 1 of them.
inline void append_range_boxes(const LogicalBox& box, std::size_t lo, std::size_t hi,
                               std::vector<LogicalBox>& out, std::size_t d = 0,
                               LogicalBox prefix = {}) {
  if (lo >= hi) return;
  const std::size_t rank = box.extents.size();
  if (d == 0) prefix = box;
  if (rank == 0) {
    out.push_back(box);
    return;
  }
  std::size_t stride = 1;  // elements per index of dimension d
  for (std::size_t k = d + 1; k < rank; ++k) stride *= box.extents[k];
  // Rows [first, last) of dimension d are whole; a partial row may come before and after.
  const std::size_t first = (lo + stride - 1) / stride, last = hi / stride;
  auto row = [&](std::size_t i, std::size_t a, std::size_t b) {
    LogicalBox sub = prefix;
    sub.start[d] = box.start[d] + i;
    sub.extents[d] = 1;
    append_range_boxes(box, a, b, out, d + 1, std::move(sub));
  };
  if (first > last) {  // lo and hi inside the same row
    const std::size_t i = lo / stride;
    row(i, lo - i * stride, hi - i * stride);
    return;
  }
  if (lo % stride != 0) row(first - 1, lo % stride, stride);
  if (last > first) {
    LogicalBox whole = prefix;
    whole.start[d] = box.start[d] + first;
    whole.extents[d] = last - first;
    out.push_back(std::move(whole));
  }
  if (hi % stride != 0) row(last, 0, hi % stride);
}

// Records where each of a unit's storage views goes in the flat buffer (first visit).
template <class T>
class StorageLayout {
 public:
  template <class V, class G>
  void operator()(V& value, G& grad) {
    static_assert(std::is_same<typename V::non_const_value_type, T>::value &&
                      std::is_same<typename G::non_const_value_type, T>::value,
                  "dchag::ShardedUnit: a layer's storage holds another scalar type");
    require(value.size() == grad.size(), "dchag::ShardedUnit '", unit_, "': a layer's value ",
            shape_of(value), " and gradient ", shape_of(grad), " differ in size");
    require(value.span_is_contiguous() && grad.span_is_contiguous(), "dchag::ShardedUnit '",
            unit_, "': a layer's storage ", shape_of(value), " is not contiguous");
    offsets.push_back(total);
    sizes.push_back(value.size());
    originals.push_back(value.data());
    // Each view starts on a 64-byte boundary (pads stay zero and belong to no parameter).
    total += (value.size() + 15) / 16 * 16;
  }

  explicit StorageLayout(std::string unit) : unit_(std::move(unit)) {}

  std::vector<std::size_t> offsets, sizes;
  std::vector<T*> originals;
  std::size_t total = 0;

 private:
  std::string unit_;
};

// Points each storage view at its place in given value and gradient buffers (null: nowhere),
// keeping its extents, so a layer goes on checking shapes against views that hold nothing.
template <class T>
class StorageBinder {
 public:
  StorageBinder(const std::string& unit, const std::vector<std::size_t>& offsets,
                const std::vector<std::size_t>& sizes, T* values, T* grads)
      : unit_(unit), offsets_(offsets), sizes_(sizes), values_(values), grads_(grads) {}

  template <class V, class G>
  void operator()(V& value, G& grad) {
    require(index_ < sizes_.size() && sizes_[index_] == value.size(), "dchag::ShardedUnit '",
            unit_, "': its layers list other storage than when it was built");
    const std::size_t at = offsets_[index_++];
    value = V(values_ ? values_ + at : nullptr, value.layout());
    grad = G(grads_ ? grads_ + at : nullptr, grad.layout());
  }

  std::size_t visited() const { return index_; }

 private:
  const std::string& unit_;
  const std::vector<std::size_t>& offsets_;
  const std::vector<std::size_t>& sizes_;
  T* values_;
  T* grads_;
  std::size_t index_ = 0;
};

}  // namespace Impl

template <class T, class ExecSpace>
class ShardedUnit {
 public:
  using vector = View1<T, ExecSpace>;

  ShardedUnit() = default;

  // Takes over the storage of the unit's layers: their current values are kept (sliced), their
  // own allocations are freed. visit(f) must call layer.visit_storage(f) for every layer of the
  // unit, list(params) layer.parameters(params): every parameter must lie in the storage.
  template <class Visit, class List>
  ShardedUnit(std::string name, Communicator fsdp, Visit&& visit, List&& list)
      : name_(std::move(name)), fsdp_(std::move(fsdp)) {
    Impl::require(fsdp_->size() > 0, "dchag::ShardedUnit '", name_, "': empty fsdp group");
    const std::size_t p = static_cast<std::size_t>(fsdp_->size());
    Impl::StorageLayout<T> layout(name_);
    visit(layout);
    offsets_ = layout.offsets;
    sizes_ = layout.sizes;
    views_ = sizes_.size();
    full_size_ = layout.total;
    shard_ = (layout.total + p - 1) / p;
    const std::size_t begin = shard_ * static_cast<std::size_t>(fsdp_->rank());
    shard_value_ = vector(name_ + ".shard", shard_);
    shard_grad_ = vector(name_ + ".shard.grad", shard_);

    // Where each parameter lies in the flat buffer, from the layers' own pointers.
    ParameterList<T, ExecSpace> whole;
    list(whole);
    for (const auto& q : whole) {
      // (as integers: pointers into different allocations do not compare in C++)
      const auto address = [](const T* x) { return reinterpret_cast<std::uintptr_t>(x); };
      const std::uintptr_t at = address(q.value.data()), bytes = q.size() * sizeof(T);
      std::size_t view = views_;
      for (std::size_t i = 0; i < views_ && view == views_; ++i) {
        const std::uintptr_t begin_i = address(layout.originals[i]);
        if (q.size() > 0 && at >= begin_i && at + bytes <= begin_i + sizes_[i] * sizeof(T))
          view = i;
      }
      Impl::require(q.size() == 0 || view < views_, "dchag::ShardedUnit '", name_,
                    "': parameter '", q.name, "' does not lie in the storage of the unit's layers");
      Impl::require(!q.shape.empty(), "dchag::ShardedUnit '", name_, "': parameter '", q.name,
                    "' is a scalar; it cannot be cut into slices");
      const std::size_t flat =
          q.size() == 0 ? 0
                        : offsets_[view] + (at - address(layout.originals[view])) / sizeof(T);
      const std::size_t lo = std::max(flat, begin), hi = std::min(flat + q.size(), begin + shard_);
      Parameter<T, ExecSpace> s = q;
      s.sharded = true;
      s.pieces.clear();
      const std::size_t n = hi > lo ? hi - lo : 0;
      s.value = Unmanaged<T*, ExecSpace>(shard_value_.data() + (n ? lo - begin : 0), n);
      s.grad = Unmanaged<T*, ExecSpace>(shard_grad_.data() + (n ? lo - begin : 0), n);
      if (n > 0) {
        // Elements [lo, hi) of the flat buffer are elements [lo - flat, hi - flat) of this
        // rank's tensor-parallel share: its pieces (the whole tensor when none) one after the
        // other.
        std::vector<LogicalBox> local = q.pieces;
        if (local.empty()) local.push_back(Impl::whole_box(q.shape));
        std::size_t piece_begin = 0;
        for (const auto& b : local) {
          const std::size_t a = std::max(lo - flat, piece_begin);
          const std::size_t e = std::min(hi - flat, piece_begin + b.size());
          if (a < e) Impl::append_range_boxes(b, a - piece_begin, e - piece_begin, s.pieces);
          piece_begin += b.size();
        }
      } else {
        // Nothing of it here: one empty box (no pieces would mean "the whole tensor").
        s.pieces.push_back(LogicalBox{std::vector<std::size_t>(q.shape.size(), 0),
                                      std::vector<std::size_t>(q.shape.size(), 0)});
      }
      params_.push_back(std::move(s));
    }

    // This rank's slice of the current values (straight from each view's overlap with it; the
    // pads stay zero), then the layers' own storage goes.
    for (std::size_t i = 0; i < views_; ++i) {
      const std::size_t lo = std::max(offsets_[i], begin);
      const std::size_t hi = std::min(offsets_[i] + sizes_[i], begin + shard_);
      if (lo >= hi) continue;
      Kokkos::deep_copy(
          Kokkos::subview(shard_value_, Kokkos::make_pair(lo - begin, hi - begin)),
          Unmanaged<T*, ExecSpace>(layout.originals[i] + (lo - offsets_[i]), hi - lo));
    }
    bind(visit, nullptr, nullptr);
  }

  // The layers' values are those of the slices of every rank (collective over fsdp).
  // Waits for a start_gather() instead when one is in flight.
  template <class Visit>
  void gather(const ExecSpace& space, Visit&& visit) {
    if (gathering_) {
      gathering_ = false;
      gather_request_.wait();
    } else {
      allocate_full_value();
      all_gather(space, *fsdp_, shard_value_, full_value_);
    }
    bind(visit, full_value_.data(), full_grad_.data());
  }

  // Issues the all-gather of the values without waiting for it; the layers are not touched
  // (gather() waits for it and points them at the result). A unit still gathered (the encoder's
  // norm after an evaluation forward) is gathered anew into the same buffer, as gather() does:
  // its layers must not compute until gather(). Collective over fsdp.
  void start_gather(const ExecSpace& space) {
    Impl::require(!gathering_, "dchag::ShardedUnit '", name_,
                  "': start_gather() while a gather is in flight");
    allocate_full_value();
    gather_request_ = start_all_gather(space, *fsdp_, shard_value_, full_value_);
    gathering_ = true;
  }

  // set() writes every value of the unit (each rank the same: an initialisation); this rank
  // keeps its slice. Not collective.
  template <class Visit, class Set>
  void assign(Visit&& visit, Set&& set) {
    full_value_ = vector(name_ + ".gathered", shard_ * fsdp_size());
    bind(visit, full_value_.data(), nullptr);
    set();
    Kokkos::fence();
    const std::size_t begin = shard_ * static_cast<std::size_t>(fsdp_->rank());
    Kokkos::deep_copy(shard_value_,
                      Kokkos::subview(full_value_, Kokkos::make_pair(begin, begin + shard_)));
    release(visit);
  }

  // (A gather still in flight is waited for first: MPI writes into the buffer until then.)
  template <class Visit>
  void release(Visit&& visit) {
    gathering_ = false;
    gather_request_.wait();
    bind(visit, nullptr, nullptr);
    full_value_ = vector();
    full_grad_ = vector();
  }

  // The layers' gradients go to a zeroed full buffer (the values are gathered unless they are).
  template <class Visit>
  void begin_backward(const ExecSpace& space, Visit&& visit) {
    Impl::require(!reducing_, "dchag::ShardedUnit '", name_,
                  "': begin_backward() before finish_end_backward() of the last backward");
    full_grad_ = vector(name_ + ".gathered.grad", shard_ * fsdp_size());
    if (full_value_.extent(0) == 0 || gathering_) {
      gather(space, visit);
    } else {
      bind(visit, full_value_.data(), full_grad_.data());
    }
  }

  // This rank's gradient slice += its slice of the sum over the group of the full gradients;
  // then releases the unit (collective over fsdp).
  template <class Visit>
  void end_backward(const ExecSpace& space, Visit&& visit) {
    Impl::require(full_grad_.extent(0) > 0, "dchag::ShardedUnit '", name_,
                  "': end_backward() without begin_backward()");
    if (scratch_.extent(0) != shard_) scratch_ = vector(name_ + ".reduced.grad", shard_);
    reduce_scatter_sum(space, *fsdp_, full_grad_, scratch_);
    add_scaled(space, shard_grad_, T(1), scratch_);
    space.fence();
    release(visit);
  }

  // end_backward() in two halves: issues the reduce-scatter and releases the unit (the request
  // keeps the full gradient alive until it completes); finish_end_backward() waits for it and
  // adds this rank's slice to its gradient. Both collective over fsdp, in this order.
  template <class Visit>
  void start_end_backward(const ExecSpace& space, Visit&& visit) {
    Impl::require(full_grad_.extent(0) > 0, "dchag::ShardedUnit '", name_,
                  "': start_end_backward() without begin_backward()");
    if (scratch_.extent(0) != shard_) scratch_ = vector(name_ + ".reduced.grad", shard_);
    grad_request_ = start_reduce_scatter_sum(space, *fsdp_, full_grad_, scratch_);
    reducing_ = true;
    release(visit);
  }

  void finish_end_backward(const ExecSpace& space) {
    Impl::require(reducing_, "dchag::ShardedUnit '", name_,
                  "': finish_end_backward() without start_end_backward()");
    reducing_ = false;
    grad_request_.wait();
    add_scaled(space, shard_grad_, T(1), scratch_);
    space.fence();
  }

  // This rank's slices, one entry per parameter of the unit (empty ones included), with the
  // logical boxes they hold.
  void parameters(ParameterList<T, ExecSpace>& list) const {
    list.insert(list.end(), params_.begin(), params_.end());
  }

  // (Not while a start_gather() is in flight: the values arrive at gather().)
  bool gathered() const { return full_value_.extent(0) > 0 && !gathering_; }
  // Values in the unit (without padding) and in this rank's slice.
  std::size_t full_size() const { return full_size_; }
  std::size_t shard_size() const { return shard_; }
  const std::string& name() const { return name_; }

 private:
  int fsdp_size() const { return fsdp_->size(); }

  void allocate_full_value() {
    if (full_value_.extent(0) != shard_ * fsdp_size())
      full_value_ = vector(name_ + ".gathered", shard_ * fsdp_size());
  }

  template <class Visit>
  void bind(Visit&& visit, T* values, T* grads) {
    Impl::StorageBinder<T> binder(name_, offsets_, sizes_, values, grads);
    visit(binder);
    Impl::require(binder.visited() == views_, "dchag::ShardedUnit '", name_, "': the layers list ",
                  binder.visited(), " storage views, the unit was built with ", views_);
  }

  std::string name_;
  std::optional<Communicator> fsdp_;  // empty only in a default-constructed unit
  std::size_t views_ = 0, full_size_ = 0, shard_ = 0;
  bool gathering_ = false;  // between start_gather() and gather() (or release())
  bool reducing_ = false;   // between start_end_backward() and finish_end_backward()
  std::vector<std::size_t> offsets_, sizes_;
  vector shard_value_, shard_grad_, full_value_, full_grad_, scratch_;
  ParameterList<T, ExecSpace> params_;
  // Declared last: destroyed first, each waiting for MPI before the buffers above may go.
  CommRequest gather_request_, grad_request_;
};

namespace Impl {

// set() writes the values of the layers of a unit (initialisation): directly when the unit is
// not sharded (empty), else through it.
template <class T, class ExecSpace, class Visit, class Set>
void assign_values(std::optional<ShardedUnit<T, ExecSpace>>& unit, Visit&& visit, Set&& set) {
  if (unit) {
    unit->assign(visit, set);
  } else {
    set();
  }
}

// The unit gathered for the scope's lifetime: gathers in the constructor (collective over
// fsdp), releases in the destructor, and does nothing at all when the model is not sharded
// (the optional is empty), so that a model writes the check once. Releasing only re-points the
// layers' views and frees the full buffers (no communication), so it is safe from a
// destructor, also while an exception unwinds: a failed forward leaves no unit gathered.
// keep() hands the gathered unit on instead (to a BackwardScope that follows at once: the
// head, whose backward uses the values its forward gathered).
template <class T, class ExecSpace, class Visit>
class GatheredScope {
 public:
  GatheredScope(std::optional<ShardedUnit<T, ExecSpace>>& unit, const ExecSpace& space,
                Visit visit)
      : unit_(unit ? &*unit : nullptr), visit_(std::move(visit)) {
    if (unit_) unit_->gather(space, visit_);
  }

  GatheredScope(const GatheredScope&) = delete;
  GatheredScope& operator=(const GatheredScope&) = delete;

  ~GatheredScope() {
    if (!unit_) return;
    // The binding is the one gather() made and checked with the same layers, so it cannot fail
    // here; were it to, a destructor must not throw (and, unwinding, the error in flight is
    // the one to report).
    try {
      unit_->release(visit_);
    } catch (...) {
    }
  }

  // Leaves the unit gathered when the scope ends.
  void keep() { unit_ = nullptr; }

 private:
  ShardedUnit<T, ExecSpace>* unit_;
  Visit visit_;
};

// A unit's backward: the constructor points the gradients at a zeroed full buffer (gathering
// the values unless they are), finish() reduce-scatters the gradient into this rank's slice
// and releases. Nothing when the model is not sharded. The reduction is an explicit call, not
// the destructor's work: it is a collective, and a destructor run by an exception on one rank
// would enter it alone (the others hang), or a failure in it would throw from a destructor
// (std::terminate). A scope that ends without finish() (an exception on the way) only releases
// the unit, locally: that step's gradients are lost with the step.
template <class T, class ExecSpace, class Visit>
class BackwardScope {
 public:
  BackwardScope(std::optional<ShardedUnit<T, ExecSpace>>& unit, const ExecSpace& space,
                Visit visit)
      : unit_(unit ? &*unit : nullptr), space_(space), visit_(std::move(visit)) {
    if (unit_) unit_->begin_backward(space_, visit_);
  }

  BackwardScope(const BackwardScope&) = delete;
  BackwardScope& operator=(const BackwardScope&) = delete;

  ~BackwardScope() {
    if (!unit_) return;
    try {  // see GatheredScope: local, and must not throw
      unit_->release(visit_);
    } catch (...) {
    }
  }

  // This rank's gradient slice += its slice of the group's summed gradient; then the unit is
  // released (collective over fsdp; call it on every rank, once).
  void finish() {
    if (!unit_) return;
    unit_->end_backward(space_, visit_);
    unit_ = nullptr;
  }

 private:
  ShardedUnit<T, ExecSpace>* unit_;
  ExecSpace space_;
  Visit visit_;
};

}  // namespace Impl
}  // namespace dchag

#endif
