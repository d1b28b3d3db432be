#pragma once
/// \file runtime.h
/// Process-wide runtime set-up of the compiled library (LibTorch's thread pools).
#include <string>

namespace ichkit {

struct RuntimeInfo {
  std::string ichkit_version;
  std::string torch_version;
  int threads = 1;          ///< ichkit::num_threads()
  int cores = 1;            ///< ichkit::available_cores(): this process's CPUs (affinity, cgroup quota)
  int torch_threads = 1;    ///< LibTorch intra-op threads
  bool mkldnn = false;      ///< oneDNN (MKL-DNN) available to LibTorch
  bool cuda = false;        ///< LibTorch built with CUDA and a device visible
  bool heap_retention = false;  ///< large freed blocks kept in the heap (see init_runtime)
};

/// Keep LibTorch's intra-op thread pool in step with ichkit::set_num_threads (idempotent).
/// LibTorch starts with a single OpenMP thread here; this makes it use num_threads().
/// On glibc it also makes malloc keep freed blocks of up to 1 GiB in the heap (mallopt
/// M_MMAP_THRESHOLD and M_TRIM_THRESHOLD) so that a model's activation tensors reuse warm pages
/// instead of faulting in fresh ones on every call - this process-wide setting is the price of
/// a ~1.8x faster forward pass on CPU; set ICHKIT_HEAP_RETENTION=0 before the first call to keep
/// glibc's defaults.
void init_runtime();

/// Versions and thread counts, for `ichkit info --version` and benchmark reports.
RuntimeInfo runtime_info();

}  // namespace ichkit
