// The public C++ API of llmint8: #include <llmint8/llmint8.h>.
#pragma once

#include <llmint8/build_info.h>
#include <llmint8/checkpoint.h>
#include <llmint8/config.h>
#include <llmint8/linear8bitlt.h>
#include <llmint8/ops.h>
