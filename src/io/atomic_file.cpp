#include "ichkit/io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "ichkit/core/error.h"
#include "text.h"
#include "../core/fault.h"

namespace ichkit::io {

using detail::errno_text;

AtomicFile::AtomicFile(const std::string& path) : path_(path) {
  if (path.empty()) throw InvalidArgument("output path is empty");
  std::vector<char> tmpl(path.begin(), path.end());
  const char suffix[] = ".tmp-XXXXXX";
  tmpl.insert(tmpl.end(), suffix, suffix + sizeof(suffix));  // includes the NUL
  fd_ = ::mkstemp(tmpl.data());
  if (fd_ < 0) throw IoError("cannot create '" + path + "': " + errno_text());
  tmp_ = tmpl.data();
  ::fchmod(fd_, 0644);
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !tmp_.empty()) ::unlink(tmp_.c_str());
}

void AtomicFile::write(const void* data, std::size_t n) {
  const char* p = static_cast<const char*>(data);
  std::size_t stop_after = n;  // a crash test (fault point "atomic.write") dies halfway
  const bool die = ichkit::detail::fault_due("atomic.write");
  if (die) stop_after = n / 2;
  n = stop_after;
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw IoError("cannot write '" + path_ + "': " + errno_text());
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  if (die) ichkit::detail::fault_kill();
}

void AtomicFile::commit() {
  if (fd_ >= 0) {
    // the bytes reach the disk before the name does, so even a power cut leaves either the
    // old file or the whole new one
    if (::fsync(fd_) != 0 && errno != EINVAL && errno != EROFS) {
      const std::string why = errno_text();
      ::close(fd_);
      fd_ = -1;
      throw IoError("cannot write '" + path_ + "': " + why);
    }
    if (::close(fd_) != 0) {
      fd_ = -1;
      throw IoError("cannot write '" + path_ + "': " + errno_text());
    }
    fd_ = -1;
  }
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) throw IoError("cannot rename onto '" + path_ + "': " + errno_text());
  committed_ = true;
}

std::size_t remove_stale_temporaries(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path p(path);
  const std::string prefix = p.filename().string() + ".tmp-";
  const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  std::error_code ec;
  std::size_t removed = 0;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() == prefix.size() + 6 && name.compare(0, prefix.size(), prefix) == 0 && it->is_regular_file(ec) &&
        !it->is_symlink(ec)) {
      std::error_code rm;
      if (fs::remove(it->path(), rm)) ++removed;
    }
  }
  return removed;
}

void write_file_atomic(const std::string& path, const std::string& content) {
  AtomicFile f(path);
  f.write(content.data(), content.size());
  f.commit();
}

}  // namespace ichkit::io
