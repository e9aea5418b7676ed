// Files as the readers get them: regular files only, mapped read-only or read whole under a
// size bound, with failures that name the file (untrusted.h's message table).
#pragma once

#include <cstdint>
#include <string>

namespace llmint8::io {

// A whole regular file mapped read-only. Anything else (directory, FIFO, device) is
// refused; the open cannot block on a FIFO (O_NONBLOCK), and failures name the file.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const char* data() const { return static_cast<const char*>(data_); }
  uint64_t size() const { return size_; }
  // Drops the resident pages of [begin, begin + bytes), rounded out to whole pages, if they lie
  // in this mapping (else nothing): read again, they come back from the file. A loader calls it
  // on what it has read, so that the mapped file does not add to its peak memory.
  void release(const void* begin, uint64_t bytes) const;

 private:
  int fd_ = -1;
  void* data_ = nullptr;
  uint64_t size_ = 0;
};

// The bytes of a regular file of at most max_bytes.
std::string read_file(const std::string& path, uint64_t max_bytes);

// stat() without exceptions (std::filesystem throws on a symlink loop, and libtorch.so exports
// its own copy of it): whether path is a directory; whether anything is there at all (a broken
// link or a loop counts, and reading it then reports why).
bool is_directory(const std::string& path);
bool exists(const std::string& path);

}  // namespace llmint8::io
