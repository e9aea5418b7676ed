// A fresh folder for one test case, removed with everything in it afterwards. POSIX calls
// rather than std::filesystem: libtorch.so exports its own copy of it, which the program may bind to.
#pragma once

#include "catch_compat.h"

#include <ftw.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cstdio>
#include <string>

namespace llmint8::testing {

struct TempDir {
  std::string path;
  TempDir() {
    std::string pattern = "/tmp/llmint8_test_XXXXXX";
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path = pattern;
  }
  ~TempDir() {
    ::nftw(path.c_str(), [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); }, 16,
           FTW_DEPTH | FTW_PHYS);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};

}  // namespace llmint8::testing
