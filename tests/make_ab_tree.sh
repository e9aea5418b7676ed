#!/usr/bin/env bash
# The sources of another commit in .ab/tree (git-ignored), for run_gpu.sh's `ab` step: the GPU
# call builds both trees and times them in turns, so that a kernel change is judged against its
# base in one run on one card.
#   bash tests/make_ab_tree.sh main       (then carry .ab with .debs and .models)
#   STEPS="catch2 ab" BENCH_ARGS="--graph --quick" bash tests/run_gpu.sh   (there)
set -euo pipefail
cd "$(dirname "$0")/.."
ref=${1:?usage: tests/make_ab_tree.sh REF (a commit, branch or tag)}
commit=$(git rev-parse --verify "$ref^{commit}")
rm -rf .ab
mkdir -p .ab/tree
git archive "$commit" | tar -x -C .ab/tree
echo "$ref $commit" > .ab/REF
echo ".ab/tree: $ref ($commit)"
