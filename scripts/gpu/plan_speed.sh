# What one GPU call measures: every CUDA test, every model's step eager and captured (the paper
# experiments' settings, and ADGM/SDGM with one draw of a), and K processes sharing the GPU.
#   bash scripts/gpu/measure.sh scripts/gpu/plan_speed.sh
# A plan is bash that measure.sh sources; copy one and edit the copy for the question at hand.

# pytest arguments on the GPU; DRY_TESTS: the same kept short for DRY=1 on a CPU.
TESTS=(-m cuda tests/)
DRY_TESTS=(tests/test_graph.py -x)
# scripts/benchmark.py command lines, one entry each (dgm-run overrides after --set).
BENCHES=(
  "--device cuda --windows 5"
  "--device cuda --windows 5 --models adgm sdgm --set model.samples=1"
)
# K benchmark processes of one model at once, for each K: whether a sweep's runs can share the GPU.
SCALING=(1 2 4)
SCALING_BENCH=(--device cuda --models adgm --windows 3 --eval-digits 100 --set model.samples=1)
SCALING_S=50
# Training runs side by side: "NAME|OVERRIDES" (none here: see plan_adgm.sh).
RUNS=()
