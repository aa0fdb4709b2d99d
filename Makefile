# Two commands matter: `make demo` and `make test`. Both create .venv on first use. `make test`
# leaves out the tests marked slow (node processes, training runs); `make test-slow` runs them,
# and CI (.ci/run) runs both.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Always pin torch: an unpinned resolve pulls the CUDA build and gigabytes of packages.
TORCH := torch==2.13.0
ROS_WHEELS := "ros-rclpy[fastrtps]" ros-sensor-msgs ros-std-msgs ros-geometry-msgs \
	ros-visualization-msgs ros-diagnostic-msgs
DEMO_OUT ?= demo_out
DEMO_FRAMES ?= 20

.PHONY: install test test-slow lint demo bench reproduce clean

install: $(STAMP)

# pip compiles every installed module to bytecode one file at a time; compileall does the same
# on all cores afterwards (installed packages hold a few template files that are not Python:
# they fail to compile under pip too, hence the ignored status).
$(STAMP): setup.py setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-compile $(TORCH)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-compile $(TORCH) -e ".[test,synthetic,openclip,spconv,superpixels]" $(ROS_WHEELS)
	-$(BIN)/python -m compileall -qq -j 0 $(VENV)/lib
	-$(BIN)/python -m relkd_core.models.sparse.build   # the compiled sparse kernels, built once ahead
	touch $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy relkd_core

test: lint
	$(BIN)/pytest -m "not slow"

test-slow: install
	$(BIN)/pytest -m slow

# The whole pipeline on the synthetic world, CPU-sized (about 15 minutes on 2 cores the first
# time; a rerun reuses every step already done): record a training drive, a held-back drive
# and a drive of the other rig; prepare them with the simulated VLM; train a relational
# student; evaluate it zero-shot and with a 1% linear probe on the held-back drive; label the
# held-back bag; print a summary.
demo: install
	@mkdir -p $(DEMO_OUT)
	@for spec in "synth_nuscenes nuscenes $(DEMO_FRAMES) 0" "synth_nuscenes_val nuscenes 6 1" \
			"synth_kitti kitti 6 2"; do set -- $$spec; \
		if [ -d $(DEMO_OUT)/$$1 ]; then echo "reusing $(DEMO_OUT)/$$1"; else \
		$(BIN)/relkd-synth --out $(DEMO_OUT)/$$1 --rig $$2 --frames $$3 --seed $$4 \
			--storage mcap --image-format jpeg || exit 1; fi; done
	$(BIN)/relkd-prepare --bag $(DEMO_OUT)/synth_nuscenes --preset synth-nuscenes \
		--teacher synthetic --out $(DEMO_OUT)/prepared_nuscenes
	$(BIN)/relkd-prepare --bag $(DEMO_OUT)/synth_nuscenes_val --preset synth-nuscenes \
		--teacher synthetic --out $(DEMO_OUT)/prepared_nuscenes_val
	@if [ -f $(DEMO_OUT)/train_relational/student.pt ]; then \
		echo "reusing $(DEMO_OUT)/train_relational/student.pt"; \
	elif [ -f $(DEMO_OUT)/train_relational/last.pt ]; then \
		$(BIN)/relkd-train --config config/train/synth_relational.yaml --resume; \
	else $(BIN)/relkd-train --config config/train/synth_relational.yaml; fi
	@if [ -f $(DEMO_OUT)/eval_zero_shot/metrics.json ]; then echo "reusing $(DEMO_OUT)/eval_zero_shot"; \
	else $(BIN)/relkd-eval --checkpoint $(DEMO_OUT)/train_relational/student.pt \
		--data $(DEMO_OUT)/prepared_nuscenes_val --protocol zero-shot \
		--out $(DEMO_OUT)/eval_zero_shot; fi
	@if [ -f $(DEMO_OUT)/eval_linear_probe/metrics.json ]; then \
		echo "reusing $(DEMO_OUT)/eval_linear_probe"; \
	else $(BIN)/relkd-eval --checkpoint $(DEMO_OUT)/train_relational/student.pt \
		--data $(DEMO_OUT)/prepared_nuscenes_val --train-data $(DEMO_OUT)/prepared_nuscenes \
		--protocol linear-probe --label-fraction 0.01 --out $(DEMO_OUT)/eval_linear_probe; fi
	@if [ -d $(DEMO_OUT)/labeled_val ]; then echo "reusing $(DEMO_OUT)/labeled_val"; \
	else $(BIN)/relkd-label --checkpoint $(DEMO_OUT)/train_relational/student.pt \
		--bag $(DEMO_OUT)/synth_nuscenes_val --out $(DEMO_OUT)/labeled_val; fi
	@if [ -f $(DEMO_OUT)/student.torchscript ]; then echo "reusing $(DEMO_OUT)/student.torchscript"; \
	else $(BIN)/relkd-export --checkpoint $(DEMO_OUT)/train_relational/student.pt \
		--out $(DEMO_OUT)/student.torchscript; fi
	@$(BIN)/python scripts/demo_summary.py $(DEMO_OUT)

bench: install
	$(BIN)/python bench/bench_synth.py --out bench/results/synth.json
	$(BIN)/python bench/bench_prepare.py --out bench/results/prepare.json
	$(BIN)/python bench/bench_teacher.py --out bench/results/teacher.json
	$(BIN)/python bench/bench_losses.py --out bench/results/losses.json

# The paper's comparison on the synthetic world as a teacher sensitivity study: three teachers
# x three losses x three seeds, and learning curves (150-1200 steps) of the first teacher
# (about 2.5 hours on 2 free CPU cores; a benchmark, not a test). Reuses whatever is already
# under bench/results/paper. The learned teacher's weights are shipped
# (config/teachers/learned.pt; `relkd-bench learned-teacher` retrains them).
reproduce: install
	$(BIN)/relkd-bench paper --teachers synthetic,synthetic-orthogonal-gap,learned --seeds 3 \
		--threads 1 --out bench/results/paper

clean:
	rm -rf $(VENV) $(DEMO_OUT) build install log *.egg-info
