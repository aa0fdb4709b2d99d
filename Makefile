# Two commands matter: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Always pin torch: an unpinned resolve pulls the CUDA build and gigabytes of packages.
TORCH := torch==2.13.0
ROS_WHEELS := "ros-rclpy[fastrtps]" ros-sensor-msgs ros-std-msgs ros-geometry-msgs \
	ros-visualization-msgs ros-diagnostic-msgs
DEMO_OUT ?= demo_out
DEMO_FRAMES ?= 10

.PHONY: install test lint demo bench reproduce clean

install: $(STAMP)

$(STAMP): setup.py setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/pip install --quiet --disable-pip-version-check $(TORCH) -e ".[test,synthetic,openclip,spconv,superpixels]" $(ROS_WHEELS)
	touch $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy relkd_core

test: lint
	$(BIN)/pytest

demo: install
	@mkdir -p $(DEMO_OUT)
	@if [ -d $(DEMO_OUT)/synth_nuscenes ]; then echo "reusing $(DEMO_OUT)/synth_nuscenes"; else \
		$(BIN)/relkd-synth --out $(DEMO_OUT)/synth_nuscenes --rig nuscenes \
			--frames $(DEMO_FRAMES) --seed 0 --storage mcap --image-format jpeg; fi
	@if [ -d $(DEMO_OUT)/synth_kitti ]; then echo "reusing $(DEMO_OUT)/synth_kitti"; else \
		$(BIN)/relkd-synth --out $(DEMO_OUT)/synth_kitti --rig kitti \
			--frames $(DEMO_FRAMES) --seed 1 --storage mcap --image-format jpeg; fi
	$(BIN)/relkd-prepare --bag $(DEMO_OUT)/synth_nuscenes --preset synth-nuscenes \
		--teacher synthetic --out $(DEMO_OUT)/prepared_nuscenes

bench: install
	$(BIN)/python bench/bench_synth.py --out bench/results/synth.json
	$(BIN)/python bench/bench_prepare.py --out bench/results/prepare.json
	$(BIN)/python bench/bench_teacher.py --out bench/results/teacher.json
	$(BIN)/python bench/bench_losses.py --out bench/results/losses.json

# The paper's comparison on the synthetic world (about an hour on 2 CPU cores; a benchmark,
# not a test). Reuses whatever is already under bench/results/paper.
reproduce: install
	$(BIN)/relkd-bench paper --seeds 3 --out bench/results/paper

clean:
	rm -rf $(VENV) $(DEMO_OUT) build install log *.egg-info
