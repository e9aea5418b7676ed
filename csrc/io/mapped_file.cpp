#include "io/mapped_file.h"

#include "untrusted.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

namespace llmint8::io {

using untrusted::fail;

namespace {

const char* file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

}  // namespace

MappedFile::MappedFile(const std::string& path) {
  if (path.find('\0') != std::string::npos) fail(path, "the path", "free of NUL bytes", "a NUL byte");
  fd_ = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd_ < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
  auto close_and_fail = [&](const std::string& field, const std::string& expected, const std::string& actual) {
    ::close(fd_);
    fd_ = -1;
    fail(path, field, expected, actual);
  };
  struct stat st {};
  if (::fstat(fd_, &st) != 0) close_and_fail("the path", "a file that can be stat()ed", std::strerror(errno));
  if (!S_ISREG(st.st_mode)) close_and_fail("the path", "a regular file", file_kind(st.st_mode));
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ > 0) {
    data_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
    if (data_ == MAP_FAILED) {
      data_ = nullptr;
      close_and_fail("the file", "mappable", std::strerror(errno));
    }
  }
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(data_, size_);
  if (fd_ >= 0) ::close(fd_);
}

void MappedFile::release(const void* begin, uint64_t bytes) const {
  const auto start = reinterpret_cast<uintptr_t>(begin), base = reinterpret_cast<uintptr_t>(data_);
  if (data_ == nullptr || bytes == 0 || start < base || start - base > size_ || bytes > size_ - (start - base)) return;
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t first = start / page * page, last = (start + bytes + page - 1) / page * page;
  // Read-only pages never written: dropping them loses nothing (a failure only keeps them resident).
  ::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

std::string read_file(const std::string& path, uint64_t max_bytes) {
  const MappedFile file(path);
  if (file.size() > max_bytes) {
    fail(path, "its size", "at most " + std::to_string(max_bytes) + " bytes", std::to_string(file.size()));
  }
  return std::string(file.data(), file.size());
}

bool is_directory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 || (errno != ENOENT && errno != ENOTDIR);
}

}  // namespace llmint8::io
