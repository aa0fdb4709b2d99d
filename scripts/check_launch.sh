#!/usr/bin/env bash
# Check the real `ros2 launch relkd_ros segment.launch.py` end to end: build the package with
# colcon into a temporary folder, launch it with a demo checkpoint, publish lidar scans with
# rclpy and check that labelled clouds and the legend come back on the launch file's topics.
#
# Usage:
#   scripts/check_launch.sh                        # a sourced ROS 2 install (ros2, colcon)
#   scripts/check_launch.sh --sources DIR          # no ROS install: DIR holds checkouts of
#                                                  # ros2/launch, ros2/launch_ros, ros2/ros2cli
#   options: --python PY (default .venv/bin/python: torch, rclpy), --keep (keep the work
#            folder), --launch-args "lifecycle:=true ..." (extra launch arguments)
#
# With --sources, launch, launch_ros and ros2cli are installed from those checkouts into the
# work folder (pip --target, no dependencies), with osrf-pycommon and argcomplete from PyPI and
# a stand-in for composition_interfaces (a C++-only message package launch_ros imports at load
# time); colcon comes from PyPI in a venv of its own (it pins an old setuptools). Nothing is
# installed outside the work folder. Exit status 0 when every check passed.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
SOURCES=""
KEEP=0
LAUNCH_ARGS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --sources) SOURCES=$(cd "$2" && pwd); shift 2 ;;
        --python) PY=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --launch-args) LAUNCH_ARGS=$2; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "check_launch.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ -x "$PY" ] || { echo "check_launch.sh: no Python at $PY (run make install, or --python)" >&2; exit 2; }

WORK=$(mktemp -d -t relkd-launch-XXXXXX)
LAUNCH_PID=""
cleanup() {
    stop_launch
    if [ "$KEEP" = 1 ]; then echo "work folder kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
step() { echo; echo "== $*"; }
# pip, without its warnings about index locations and --target folders that already exist
pip_quiet() { "$@" 2>&1 | { grep -v '^WARNING: \(Location\|Target directory\)' || true; }; }
# Stop ros2 launch as a user does, with Ctrl-C (SIGINT; it runs as a job of its own, see below)
stop_launch() {
    if [ -n "$LAUNCH_PID" ] && kill -0 "$LAUNCH_PID" 2>/dev/null; then
        kill -INT "$LAUNCH_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$LAUNCH_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$LAUNCH_PID" 2>/dev/null || true
        wait "$LAUNCH_PID" 2>/dev/null || true
    fi
    LAUNCH_PID=""
}

PYVER=$("$PY" -c 'import sys; print(f"{sys.version_info.major}.{sys.version_info.minor}")')
if [ -n "$SOURCES" ]; then
    step "launch, launch_ros and ros2cli from $SOURCES into $WORK/ros"
    for pkg in launch/launch launch/launch_xml launch/launch_yaml launch_ros/launch_ros \
               launch_ros/ros2launch ros2cli/ros2cli ros2cli/ros2pkg; do
        [ -f "$SOURCES/$pkg/setup.py" ] || { echo "check_launch.sh: $SOURCES/$pkg/setup.py not found" >&2; exit 2; }
        pip_quiet "$PY" -m pip install --quiet --disable-pip-version-check --no-deps \
            --no-build-isolation --target "$WORK/ros" "$SOURCES/$pkg"
    done
    pip_quiet "$PY" -m pip install --quiet --disable-pip-version-check --target "$WORK/ros" \
        osrf-pycommon argcomplete
    if ! "$PY" -c 'import composition_interfaces.srv' 2>/dev/null; then
        mkdir -p "$WORK/ros/composition_interfaces"
        : > "$WORK/ros/composition_interfaces/__init__.py"
        for service in LoadNode UnloadNode ListNodes; do
            printf 'class %s:\n    class Request:\n        pass\n\n    class Response:\n        pass\n\n\n' \
                "$service"
        done > "$WORK/ros/composition_interfaces/srv.py"
    fi
    export PYTHONPATH="$WORK/ros${PYTHONPATH:+:$PYTHONPATH}"
    ROS2=("$PY" "$WORK/ros/bin/ros2")

    step "colcon from PyPI in $WORK/colcon"
    BASE_PY=$("$PY" -c 'import sys; print(sys._base_executable)')
    "$BASE_PY" -m venv "$WORK/colcon"
    pip_quiet "$WORK/colcon/bin/pip" install --quiet --disable-pip-version-check colcon-core \
        colcon-ros colcon-python-setup-py colcon-package-selection
    # The node scripts colcon writes start with colcon's interpreter: let it see the project's
    # packages (torch, rclpy) after its own (the older setuptools colcon needs).
    SITE=$("$PY" -c 'import site; print(site.getsitepackages()[0])')
    echo "import site; site.addsitedir('$SITE')" > "$WORK/colcon/lib/python$PYVER/site-packages/relkd-project.pth"
    COLCON="$WORK/colcon/bin/colcon"
else
    command -v ros2 >/dev/null || { echo "check_launch.sh: no ros2 on PATH: source a ROS 2 install or pass --sources DIR" >&2; exit 2; }
    command -v colcon >/dev/null || { echo "check_launch.sh: no colcon on PATH" >&2; exit 2; }
    ROS2=(ros2)
    COLCON=colcon
fi

step "colcon build --symlink-install of relkd_ros into $WORK"
mkdir -p "$WORK/src/relkd_ros"
git ls-files -z | xargs -0 cp --parents -t "$WORK/src/relkd_ros"
(cd "$WORK" && "$COLCON" build --symlink-install --base-paths src --packages-select relkd_ros \
    --event-handlers console_direct- > "$WORK/colcon.log" 2>&1) || { tail -30 "$WORK/colcon.log"; exit 1; }
tail -3 "$WORK/colcon.log"
PREFIX="$WORK/install/relkd_ros"
export AMENT_PREFIX_PATH="$PREFIX${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export PYTHONPATH="$PREFIX/lib/python$PYVER/site-packages:$PYTHONPATH"
ls "$PREFIX/lib/relkd_ros"

step "a demo checkpoint"
"$PY" - "$WORK/student.pt" <<'EOF'
import sys
sys.path.insert(0, 'test')
from infer.checkpoints import write_tiny_checkpoint
print(write_tiny_checkpoint(sys.argv[1]))
EOF

export ROS_DOMAIN_ID=$(( (RANDOM % 100) + 1 ))
step "ros2 launch relkd_ros segment.launch.py checkpoint:=$WORK/student.pt $LAUNCH_ARGS (domain $ROS_DOMAIN_ID)"
# With job control on, the background job keeps SIGINT (a non-interactive shell would make
# it ignore SIGINT, and ros2 launch would not stop on Ctrl-C).
set -m
# shellcheck disable=SC2086
"${ROS2[@]}" launch relkd_ros segment.launch.py checkpoint:="$WORK/student.pt" $LAUNCH_ARGS \
    > "$WORK/launch.log" 2>&1 &
LAUNCH_PID=$!
set +m

step "publish scans on /points, expect labelled clouds on /labeled_points and a legend on /legend"
set +e
"$PY" - <<'EOF'
import sys
import time

import numpy as np
import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from visualization_msgs.msg import MarkerArray

sys.path.insert(0, 'test')
from infer.checkpoints import synthetic_scan
from ros.nodetools import xyzi_cloud

from relkd_core.infer import LABELED_POINT_DTYPE

rclpy.init()
node = rclpy.create_node('relkd_launch_check')
clouds, legends = [], []
node.create_subscription(PointCloud2, '/labeled_points', clouds.append, 10)
node.create_subscription(MarkerArray, '/legend', legends.append, QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL))
publisher = node.create_publisher(PointCloud2, '/points', 10)
start = time.monotonic()
while publisher.get_subscription_count() == 0 and time.monotonic() - start < 120:
    rclpy.spin_once(node, timeout_sec=0.1)
print(f'node subscribed to /points after {time.monotonic() - start:.1f} s')
scan = synthetic_scan(34_000, seed=0)
sent = 0
while len(clouds) < 5 and time.monotonic() - start < 180:
    publisher.publish(xyzi_cloud(scan, (100 + sent) * 10**9, frame_id='LIDAR_TOP'))
    sent += 1
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and len(clouds) < 5:
        rclpy.spin_once(node, timeout_sec=0.05)
for _ in range(20):
    rclpy.spin_once(node, timeout_sec=0.05)
ok = len(clouds) >= 5 and bool(legends)
if clouds:
    points = np.frombuffer(clouds[-1].data, LABELED_POINT_DTYPE)
    counts = np.bincount(points['label'][points['label'] < 0xFFFF])
    print(f'sent {sent} scans, received {len(clouds)} labelled clouds; last: '
          f'{len(points)} points in frame {clouds[-1].header.frame_id}, '
          f'points per label {counts.tolist()}')
    ok &= len(points) == len(scan)
if legends:
    print('legend: ' + ', '.join(m.text for m in legends[-1].markers[1:]))
print('CHECK PASSED' if ok else 'CHECK FAILED')
sys.exit(0 if ok else 1)
EOF
STATUS=$?
set -e

step "stop ros2 launch (SIGINT, as Ctrl-C); its output"
stop_launch
cat "$WORK/launch.log"
if grep -q "XMLPARSER\|Traceback\|PROFILES_FILE" "$WORK/launch.log"; then
    echo "check_launch.sh: errors in the launch output"; STATUS=1
fi
if ! grep -q "process has finished cleanly" "$WORK/launch.log"; then
    echo "check_launch.sh: the node did not finish cleanly"; STATUS=1
fi
echo
[ "$STATUS" = 0 ] && echo "check_launch.sh: PASSED" || echo "check_launch.sh: FAILED"
exit $STATUS
