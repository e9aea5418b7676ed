#!/usr/bin/env bash
# The sources of other commits in .ab/ (git-ignored), for run_gpu.sh's `ab` step: the GPU call
# builds this tree and each of them and times them in turns, so that a kernel change is judged
# against its base in one run on one card. The first REF goes to .ab/tree, a second to
# .ab/tree2, and so on (each compared with this tree).
#   bash tests/make_ab_tree.sh main [other-branch]   (then carry .ab with .debs and .models)
#   STEPS="catch2 ab" BENCH_ARGS="--graph --quick" bash tests/run_gpu.sh   (there)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: tests/make_ab_tree.sh REF [REF...] (commits, branches or tags)" >&2; exit 2; }
rm -rf .ab
mkdir -p .ab
i=1
for ref in "$@"; do
  commit=$(git rev-parse --verify "$ref^{commit}")
  tree=.ab/tree; [ $i = 1 ] || tree=.ab/tree$i
  mkdir -p "$tree"
  git archive "$commit" | tar -x -C "$tree"
  echo "$ref $commit" >> .ab/REF
  echo "$tree: $ref ($commit)"
  i=$((i + 1))
done
