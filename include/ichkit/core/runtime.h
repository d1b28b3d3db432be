#pragma once
/// \file runtime.h
/// Process-wide runtime set-up of the compiled library (LibTorch's thread pools).
#include <string>

namespace ichkit {

struct RuntimeInfo {
  std::string ichkit_version;
  std::string torch_version;
  int threads = 1;          ///< ichkit::num_threads()
  int torch_threads = 1;    ///< LibTorch intra-op threads
  bool mkldnn = false;      ///< oneDNN (MKL-DNN) available to LibTorch
  bool cuda = false;        ///< LibTorch built with CUDA and a device visible
};

/// Keep LibTorch's intra-op thread pool in step with ichkit::set_num_threads (idempotent).
/// LibTorch starts with a single OpenMP thread here; this makes it use num_threads().
void init_runtime();

/// Versions and thread counts, for `ichkit info --version` and benchmark reports.
RuntimeInfo runtime_info();

}  // namespace ichkit
