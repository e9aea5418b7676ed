// A read-only memory map of a whole file (POSIX), unmapped when it goes out of scope.
#pragma once

#include <c10/util/Exception.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

namespace llmint8 {

class MappedFile {
 public:
  explicit MappedFile(const std::string& path) {
    fd_ = ::open(path.c_str(), O_RDONLY);
    TORCH_CHECK_VALUE(fd_ >= 0, "cannot open '", path, "': ", std::strerror(errno));
    struct stat st {};
    TORCH_CHECK_VALUE(::fstat(fd_, &st) == 0 && S_ISREG(st.st_mode), "'", path, "' is not a regular file");
    size_ = static_cast<uint64_t>(st.st_size);
    if (size_ > 0) {
      data_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
      TORCH_CHECK_VALUE(data_ != MAP_FAILED, "cannot map '", path, "': ", std::strerror(errno));
    }
  }
  ~MappedFile() {
    if (data_ != nullptr && data_ != MAP_FAILED) ::munmap(data_, size_);
    if (fd_ >= 0) ::close(fd_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const char* data() const { return static_cast<const char*>(data_); }
  uint64_t size() const { return size_; }

 private:
  int fd_ = -1;
  void* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace llmint8
