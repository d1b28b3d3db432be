#pragma once
/// \file volume.h
/// `Volume<T>`: voxels + geometry + metadata.
///
/// Voxel (i, j, k) lives at `data()[i + ni * (j + nj * k)]` (`i` fastest, NIfTI's on-disk
/// order). In Python `vol.array` has shape (ni, nj, nk) and indexes like nibabel's
/// `get_fdata()`; a torch tensor of it is (D, H, W) = (nk, nj, ni). Copies of a Volume share
/// the voxel buffer (cheap); `deep_copy()` duplicates it.
#include <xtensor/xadapt.hpp>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

#include "ichkit/core/error.h"
#include "ichkit/core/geometry.h"

namespace ichkit {

/// Free-form key/value metadata carried with a volume (e.g. "description", "modality").
/// `at()` of a missing key throws.
class Metadata {
public:
  bool has(const std::string& key) const { return items_.count(key) != 0; }
  const std::string& at(const std::string& key) const {
    auto it = items_.find(key);
    if (it == items_.end()) throw InvalidArgument("metadata has no key '" + key + "'");
    return it->second;
  }
  void set(const std::string& key, std::string value) { items_[key] = std::move(value); }
  void erase(const std::string& key) { items_.erase(key); }
  const std::map<std::string, std::string>& items() const { return items_; }

private:
  std::map<std::string, std::string> items_;
};

namespace detail {

/// A bounded cache of large freed voxel buffers (2 MiB-aligned, >= 4 MiB). A fresh large
/// allocation costs a page fault and a kernel zero-fill per page on first touch - for a
/// 512 x 512 x 32 float scan that is more than the arithmetic of windowing it - so buffers
/// that a preprocessing step frees are kept and handed to the next request of the same size
/// class (sizes rounded up to 2 MiB; a cached block serves requests down to 3/4 of its size).
/// The cache holds at most `limit` bytes (default 256 MiB, environment variable
/// ICHKIT_BUFFER_CACHE_MB, or set_buffer_cache_limit()); the oldest blocks go first. It is a
/// leaked singleton, so buffers freed during static destruction are still safe.
class BufferCache {
public:
  static BufferCache& instance() {
    static BufferCache* c = new BufferCache();  // never destroyed: see above
    return *c;
  }
  /// A cached block of at least `bytes` (and at most 4/3 of it; its size in `got`), or nullptr.
  void* take(std::size_t bytes, std::size_t& got) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = blocks_.rbegin(); it != blocks_.rend(); ++it)
      if (it->bytes >= bytes && it->bytes / 4 * 3 <= bytes) {
        void* p = it->ptr;
        got = it->bytes;
        held_ -= it->bytes;
        blocks_.erase(std::next(it).base());
        return p;
      }
    return nullptr;
  }
  /// Keep `p` (of `bytes`) or free it; evicts the oldest blocks beyond the limit.
  void give(void* p, std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (bytes > limit_) {
      std::free(p);
      return;
    }
    blocks_.push_back({p, bytes});
    held_ += bytes;
    while (held_ > limit_) {
      std::free(blocks_.front().ptr);
      held_ -= blocks_.front().bytes;
      blocks_.erase(blocks_.begin());
    }
  }
  void set_limit(std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    limit_ = bytes;
    while (held_ > limit_) {
      std::free(blocks_.front().ptr);
      held_ -= blocks_.front().bytes;
      blocks_.erase(blocks_.begin());
    }
  }
  std::size_t held() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return held_;
  }

private:
  BufferCache() {
    if (const char* e = std::getenv("ICHKIT_BUFFER_CACHE_MB")) {
      char* end = nullptr;
      const unsigned long long mb = std::strtoull(e, &end, 10);
      if (end != e && *end == '\0' && mb < (1ULL << 20)) limit_ = static_cast<std::size_t>(mb) << 20;
    }
  }
  struct Block {
    void* ptr;
    std::size_t bytes;
  };
  mutable std::mutex mutex_;
  std::vector<Block> blocks_;
  std::size_t held_ = 0;
  std::size_t limit_ = std::size_t(256) << 20;
};

/// Bytes of freed large voxel buffers the process may keep for reuse (see BufferCache); 0
/// turns the cache off.
inline void set_buffer_cache_limit(std::size_t bytes) { BufferCache::instance().set_limit(bytes); }

/// The largest voxel buffer one allocation may take, in bytes. A volume whose header, pipeline
/// or resampling asks for more is refused with ResourceError before anything is allocated
/// (decompression bombs, hostile shapes in a model's pipeline). Default: the machine's
/// physical memory, or $ICHKIT_MEMORY_BUDGET_MB when set.
inline std::atomic<std::uint64_t>& memory_budget_bytes() {
  static std::atomic<std::uint64_t> budget{[] {
    if (const char* e = std::getenv("ICHKIT_MEMORY_BUDGET_MB")) {
      char* end = nullptr;
      const unsigned long long mb = std::strtoull(e, &end, 10);
      if (end != e && *end == '\0' && mb > 0 && mb < (1ULL << 40)) return static_cast<std::uint64_t>(mb) << 20;
    }
#if defined(__unix__) || defined(__APPLE__)
    const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0) return static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page);
#endif
    return std::uint64_t(16) << 30;
  }()};
  return budget;
}

/// Voxel buffers: 64-byte aligned; buffers of 4 MiB and more are 2 MiB aligned, advised to
/// use transparent huge pages (as numpy does), which cuts page faults ~500-fold, and recycled
/// through BufferCache.
template <class T>
std::shared_ptr<T> allocate_voxels(std::size_t n) {
  if (n > std::numeric_limits<std::size_t>::max() / sizeof(T) - (std::size_t(4) << 20))
    throw ResourceError("volume too large to address");
  constexpr std::size_t huge = std::size_t(2) << 20;
  const std::size_t raw = n * sizeof(T);
  if (raw > memory_budget_bytes().load())
    throw ResourceError("a volume of " + std::to_string(n) + " voxels (" + std::to_string(raw >> 20) +
                        " MiB) is over the memory budget of " + std::to_string(memory_budget_bytes().load() >> 20) +
                        " MiB (ichkit::set_memory_budget, $ICHKIT_MEMORY_BUDGET_MB)");
  const std::size_t align = raw >= 2 * huge ? huge : 64;
  const std::size_t bytes = std::max<std::size_t>(align, (raw + align - 1) / align * align);
  if (align == huge) {
    std::size_t got = bytes;
    void* p = BufferCache::instance().take(bytes, got);
    if (!p) {
      p = std::aligned_alloc(align, bytes);
      if (!p) throw ResourceError("out of memory allocating " + std::to_string(bytes) + " bytes of voxels");
#ifdef MADV_HUGEPAGE
      ::madvise(p, bytes, MADV_HUGEPAGE);
#endif
    }
    return std::shared_ptr<T>(static_cast<T*>(p), [got](T* q) { BufferCache::instance().give(q, got); });
  }
  void* p = std::aligned_alloc(align, bytes);
  if (!p) throw ResourceError("out of memory allocating " + std::to_string(bytes) + " bytes of voxels");
  return std::shared_ptr<T>(static_cast<T*>(p), [](T* q) { std::free(q); });
}

inline std::size_t checked_count(const Shape3& s) {
  std::size_t n = 1;
  for (std::size_t d : s) {
    if (d == 0) throw InvalidArgument("volume dimensions must be positive");
    if (n > std::numeric_limits<std::size_t>::max() / d) throw ResourceError("volume dimensions overflow");
    n *= d;
  }
  return n;
}
}  // namespace detail

/// Set the largest voxel buffer one allocation may take, in bytes (see
/// detail::memory_budget_bytes); readers, resampling and pipelines refuse bigger volumes with
/// ResourceError before allocating.
inline void set_memory_budget(std::uint64_t bytes) {
  if (bytes == 0) throw InvalidArgument("set_memory_budget: the budget must be > 0 bytes");
  detail::memory_budget_bytes().store(bytes);
}
/// The current per-allocation voxel budget in bytes.
inline std::uint64_t memory_budget() { return detail::memory_budget_bytes().load(); }

/// Bytes of freed large voxel buffers the process may keep for reuse (default 256 MiB or
/// $ICHKIT_BUFFER_CACHE_MB); 0 turns the cache off and frees what it holds.
using detail::set_buffer_cache_limit;

/// Voxels of type T on a 3D grid with its geometry and metadata.
template <class T>
class Volume {
  static_assert(std::is_arithmetic<T>::value, "Volume<T> holds arithmetic voxel types");

public:
  using value_type = T;

  /// An empty volume (size 0); most operations on it throw.
  Volume() = default;

  /// A new volume of `shape`, every voxel set to `fill`.
  explicit Volume(const Shape3& shape, const Geometry& geometry = Geometry(), T fill = T{})
      : Volume(uninitialized(shape, geometry)) {
    std::fill_n(data_.get(), size_, fill);
  }

  /// A new volume whose voxels are not initialised (for readers that fill every voxel).
  static Volume uninitialized(const Shape3& shape, const Geometry& geometry = Geometry()) {
    Volume v;
    v.size_ = detail::checked_count(shape);
    v.shape_ = shape;
    v.geometry_ = geometry;
    v.data_ = detail::allocate_voxels<T>(v.size_);
    return v;
  }

  /// A volume over an existing buffer kept alive by `owner` (zero-copy; e.g. a numpy array).
  /// The buffer must hold `shape` voxels in `i`-fastest order.
  static Volume adopt(std::shared_ptr<T> owner, const Shape3& shape, const Geometry& geometry = Geometry()) {
    if (!owner) throw InvalidArgument("Volume::adopt: null buffer");
    Volume v;
    v.size_ = detail::checked_count(shape);
    v.shape_ = shape;
    v.geometry_ = geometry;
    v.data_ = std::move(owner);
    return v;
  }

  const Shape3& shape() const { return shape_; }
  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::size_t ni() const { return shape_[0]; }
  std::size_t nj() const { return shape_[1]; }
  std::size_t nk() const { return shape_[2]; }

  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }
  /// The shared owner of the voxel buffer (used by zero-copy bindings).
  const std::shared_ptr<T>& buffer() const { return data_; }

  /// Linear offset of voxel (i, j, k).
  std::size_t offset(std::size_t i, std::size_t j, std::size_t k) const { return i + shape_[0] * (j + shape_[1] * k); }
  T& operator()(std::size_t i, std::size_t j, std::size_t k) { return data_.get()[offset(i, j, k)]; }
  const T& operator()(std::size_t i, std::size_t j, std::size_t k) const { return data_.get()[offset(i, j, k)]; }

  /// Bounds-checked access; throws InvalidArgument outside the grid.
  const T& at(std::size_t i, std::size_t j, std::size_t k) const {
    if (i >= shape_[0] || j >= shape_[1] || k >= shape_[2]) throw InvalidArgument("voxel index out of range");
    return (*this)(i, j, k);
  }

  /// xtensor view (no copy) with shape (ni, nj, nk) in column-major (i-fastest) layout.
  auto xt() {
    return xt::adapt<xt::layout_type::column_major>(data_.get(), size_, xt::no_ownership(), shape_);
  }
  auto xt() const {
    return xt::adapt<xt::layout_type::column_major>(data_.get(), size_, xt::no_ownership(), shape_);
  }

  const Geometry& geometry() const { return geometry_; }
  void set_geometry(const Geometry& g) { geometry_ = g; }
  const Eigen::Matrix4d& affine() const { return geometry_.affine(); }
  Eigen::Vector3d spacing() const { return geometry_.spacing(); }

  Metadata& metadata() { return metadata_; }
  const Metadata& metadata() const { return metadata_; }

  /// A copy with its own voxel buffer.
  Volume deep_copy() const {
    if (empty()) return Volume();
    Volume v = uninitialized(shape_, geometry_);
    std::memcpy(v.data(), data(), size_ * sizeof(T));
    v.metadata_ = metadata_;
    return v;
  }

  /// True if both share one voxel buffer.
  bool shares_buffer_with(const Volume& o) const { return data_ && data_ == o.data_; }

  /// Same shape, geometry (to `tol`) - i.e. voxel (i, j, k) is the same place in both.
  template <class U>
  bool same_grid(const Volume<U>& o, double tol = 1e-6) const {
    return shape_ == o.shape() && geometry_.approx_equal(o.geometry(), tol);
  }

  /// A new volume of another voxel type with the same grid (values converted by static_cast).
  template <class U>
  Volume<U> cast() const {
    Volume<U> v = Volume<U>::uninitialized(shape_, geometry_);
    const T* s = data();
    U* d = v.data();
    for (std::size_t n = 0; n < size_; ++n) d[n] = static_cast<U>(s[n]);
    v.metadata() = metadata_;
    return v;
  }

private:
  Shape3 shape_{0, 0, 0};
  std::size_t size_ = 0;
  std::shared_ptr<T> data_;
  Geometry geometry_;
  Metadata metadata_;
};

}  // namespace ichkit
