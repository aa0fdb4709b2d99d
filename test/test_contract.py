"""The train → robot contract end to end: a student trained on one preset's data is fed scans
read the same way by relkd-eval (the prepared points), relkd-label and the node's labelling core;
an explicit override changes the reading and is logged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from rosbags.highlevel import AnyReader

from relkd_core.cli.label import main as label_main
from relkd_core.cli.train import main as train_main
from relkd_core.data.prepared import PreparedDataset
from relkd_core.data.preset import load_preset
from relkd_core.data.scan import stamp_ns
from relkd_core.infer import LABELED_POINT_DTYPE
from relkd_core.infer.online import OnlineLabeling
from relkd_core.infer.topics import LABELED_TOPIC
from relkd_core.models.distilled import load_checkpoint, scan_features
from relkd_ros.params import params_from_values

PRESET = 'synth-nuscenes'
TINY_STUDENT = {'variant': '14', 'width_multiplier': 0.125, 'out_dim': 16,
                'voxel_size_m': 0.4, 'voxelization': 'cartesian'}


@pytest.fixture(scope='module')
def trained(tiny_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """student.pt distilled for one step from the tiny bag prepared with the preset."""
    root = tmp_path_factory.mktemp('contract')
    config = {'out_dir': str(root / 'run'), 'data': {'prepared': str(tiny_prepared)},
              'student': TINY_STUDENT, 'steps': 1, 'batch_size': 2, 'log_every': 1,
              'loss': {'weights': {'similarity': 1.0}, 'pairs_per_batch': 256}}
    (root / 'train.yaml').write_text(yaml.safe_dump(config))
    assert train_main(['--config', str(root / 'train.yaml')]) == 0
    return root / 'run' / 'student.pt'


def _scans(bag: Path) -> dict[int, Any]:
    """Lidar messages of a bag by header stamp."""
    topic = load_preset(PRESET).lidar.topic
    with AnyReader([bag]) as reader:
        messages = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()
                    if c.topic == topic]
    return {stamp_ns(m.header.stamp): m for m in messages}


def _node_core(trained: Path, values: dict[str, Any]) -> OnlineLabeling:
    """The labelling core segment_node builds from ``values`` (its parameters)."""
    params = params_from_values({'checkpoint': str(trained), **values})
    return OnlineLabeling.start(params.checkpoint, params.labeling_request(),
                                device=params.device, queue_size=params.queue_size)


def _node_labels(online: OnlineLabeling, message: Any) -> tuple[Any, Any]:
    """What the node does with one message: receive (read, queue), then label on the main
    thread; the scan as read and its LabeledScan."""
    online.receive(message)
    job = online.queue.get(0.1)
    assert job is not None
    return job.scan, online.label(job)[0]


@pytest.mark.slow
def test_contract_label_node_and_eval_read_a_scan_identically(
        trained: Path, tiny_bags: dict[tuple[str, str], Path], tiny_prepared: Path,
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = load_checkpoint(trained)
    assert checkpoint.scan_input == load_preset(PRESET).lidar.scan_input
    bag = tiny_bags[('nuscenes', 'mcap')]
    scans = _scans(bag)
    # relkd-eval reads the prepared points (preparation's reader with the preset's settings).
    frame = PreparedDataset(tiny_prepared, features=False)[0]
    model = checkpoint.build_model()
    (eval_features,) = scan_features(model, [torch.from_numpy(frame.points)])
    message = scans[frame.t_ns]

    # relkd-label with nothing but the checkpoint.
    out = tmp_path / 'labeled'
    assert label_main(['--checkpoint', str(trained), '--bag', str(bag), '--out', str(out)]) == 0
    assert 'overrides' not in capsys.readouterr().err
    with AnyReader([out]) as reader:
        clouds = {stamp_ns(m.header.stamp): m for m in (
            reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()
            if c.topic == f'/{LABELED_TOPIC}')}
    labeled = np.frombuffer(clouds[frame.t_ns].data, LABELED_POINT_DTYPE)
    fed = np.isfinite(labeled['score'])
    label_points = np.stack([labeled[k] for k in ('x', 'y', 'z', 'intensity')], axis=1)
    np.testing.assert_array_equal(label_points[fed], frame.points)

    # The node's labelling core with the node's default parameters.
    online = _node_core(trained, {})
    assert online.core.settings.scan_input == checkpoint.scan_input and online.notes == ()
    scan, node_labeled = _node_labels(online, message)
    np.testing.assert_array_equal(scan.valid, fed)
    np.testing.assert_array_equal(scan.points[scan.valid], frame.points)
    np.testing.assert_array_equal(node_labeled.result.labels, labeled['label'])
    for name in LABELED_POINT_DTYPE.names or ():  # the same cloud, field by field
        np.testing.assert_array_equal(node_labeled.points[name], labeled[name])
    result = online.core.labeler.label(scan.points, with_features=True,
                                       limits=online.core.settings.limits)
    assert result.features is not None
    np.testing.assert_allclose(result.features[scan.valid], eval_features.numpy(), atol=1e-6)

    # An explicit parameter changes the reading, and says so.
    online = _node_core(trained, {'intensity_scale': 1.0})
    assert online.notes == (f"intensity_scale 1.0 (parameter intensity_scale) overrides the "
                            f"checkpoint's {checkpoint.scan_input.intensity_scale!r}",)
    overridden, _ = _node_labels(online, message)
    assert not np.array_equal(overridden.points[overridden.valid], frame.points)

    # relkd-label with the same override reads the same, and says so on stderr.
    out = tmp_path / 'labeled_override'
    assert label_main(['--checkpoint', str(trained), '--bag', str(bag), '--out', str(out),
                       '--intensity-scale', '1.0']) == 0
    assert ("relkd-label: intensity_scale 1.0 (--intensity-scale) overrides the checkpoint's "
            f"{checkpoint.scan_input.intensity_scale!r}") in capsys.readouterr().err
    with AnyReader([out]) as reader:
        relabeled = {stamp_ns(m.header.stamp): m for m in (
            reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()
            if c.topic == f'/{LABELED_TOPIC}')}
    again = np.frombuffer(relabeled[frame.t_ns].data, LABELED_POINT_DTYPE)
    np.testing.assert_array_equal(again['intensity'], overridden.points[:, 3])
