#include "ichkit/io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "ichkit/core/error.h"

namespace ichkit::io {

namespace {
std::string errno_text() { return std::strerror(errno); }
}  // namespace

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
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw IoError("cannot write '" + path_ + "': " + errno_text());
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

void AtomicFile::commit() {
  if (fd_ >= 0) {
    if (::close(fd_) != 0) {
      fd_ = -1;
      throw IoError("cannot write '" + path_ + "': " + errno_text());
    }
    fd_ = -1;
  }
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) throw IoError("cannot rename onto '" + path_ + "': " + errno_text());
  committed_ = true;
}

void write_file_atomic(const std::string& path, const std::string& content) {
  AtomicFile f(path);
  f.write(content.data(), content.size());
  f.commit();
}

}  // namespace ichkit::io
