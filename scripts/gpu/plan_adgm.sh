# What one GPU call measures: the paper's ADGM (experiment=adgm_mnist, 10 draws of a, the step captured
# as a CUDA graph) for as many epochs as the call holds, its test accuracy every 10 epochs.
#   bash scripts/gpu/measure.sh scripts/gpu/plan_adgm.sh

TESTS=()
DRY_TESTS=()
BENCHES=()
SCALING=()
# One run has the GPU to itself: runs that share it take turns (no MPS), so one long run says more.
RUNS=(
  "adgm_paper|experiment=adgm_mnist logger.images=0 logger.embedding=0"
)
