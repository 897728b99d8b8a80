# mk/slurm.mk — `make test-slurm`: tests/slurm_test.sh starts a real one-node
# Slurm cluster on localhost (munged, slurmctld, slurmd; installs slurm-wlm
# and munge from Debian when missing; needs root), runs a small sweep as a
# 4-way array job through scripts/slurm_sweep.sh plus the dependent merge
# job, and checks the merged file against a single-process run.
.PHONY: test-slurm
test-slurm: $(BIN)
	AB_BIN=$(abspath $(BIN)) H5PY_VENV=$(abspath $(BUILD))/venv-h5py bash tests/slurm_test.sh
