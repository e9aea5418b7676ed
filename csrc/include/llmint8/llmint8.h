// The public C++ API of llmint8: #include <llmint8/llmint8.h>.
#pragma once

#include <llmint8/build_info.h>
#include <llmint8/ops.h>
