// What every fuzz target checks besides the sanitizers: a reader returns, or raises a c10
// error whose message carries the expected text (the input's file name, so that the user
// knows which file is bad). Any other exception, or a message without that text (a bare
// library message), is a finding: the target aborts and libFuzzer keeps the input.
#pragma once

#include <c10/util/Exception.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

namespace llmint8::fuzz {

// The name the targets give their input; every error must name it.
inline const std::string kFile = "fuzz-input";

template <typename F>
void expect_named_error(const std::string& expected, F&& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    const std::string message = e.what_without_backtrace();
    if (message.find(expected) == std::string::npos) {
      std::fprintf(stderr, "error without \"%s\" in its message: %s\n", expected.c_str(), message.c_str());
      std::abort();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "a bare library exception escaped: %s\n", e.what());
    std::abort();
  }
}

}  // namespace llmint8::fuzz
