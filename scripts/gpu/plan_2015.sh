# What one GPU call measures: the pipeline of the ADGM authors' published 2015 log (class-sorted unlabelled
# batches in a fixed order) beside the same pipeline with batches shuffled every epoch, same seed, with the
# log's 10 draws of a, for as many epochs as the call holds (the two runs take turns on the GPU), test error
# and the unlabelled digits' error every 10 epochs (README, "Reproducing ADGM"; the one-draw curves were
# measured on a CPU).
#   bash scripts/gpu/measure.sh scripts/gpu/plan_2015.sh

TESTS=()
DRY_TESTS=()
BENCHES=()
SCALING=()
COMMON="seed=0 trainer.max_epochs=200 trainer.eval_every_epochs=10 trainer.eval_iw_samples=1 \
logger.images=0 logger.embedding=0 trainer.eval_fid_samples=0"
RUNS=(
  "adgm2015_class_sorted|experiment=adgm_2015_code $COMMON"
  "adgm2015_shuffled|experiment=adgm_2015_code_shuffled $COMMON"
)
