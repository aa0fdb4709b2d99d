"""Evaluation reports: metrics.json, report.md and report.html with plots (matplotlib, Agg).

Plots: per-class IoU bars (student, and the teacher on visible points when known), the
row-normalised confusion matrix, a bird's-eye view of true vs predicted labels of one scan,
and, for several runs, the structural gap against mIoU.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from relkd_core.atomic import write_text_atomic
from relkd_core.eval.evaluate import BevSample, EvalResult
from relkd_core.taxonomy import Taxonomy, load_taxonomy

__all__ = ['REPORT_KIND', 'gap_scatter', 'is_eval_report', 'markdown_table', 'pearson',
           'write_html', 'write_report']

#: The output kind of relkd-eval (see relkd_core.outputs).
REPORT_KIND = 'eval-report'


def is_eval_report(path: Path) -> bool:
    """Whether folder ``path`` is a report written before reports were marked."""
    return (path / 'metrics.json').is_file() and (path / 'report.md').is_file()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use('Agg')
    from matplotlib import pyplot

    return pyplot


def _save(figure: Any, path: Path) -> str:
    tmp = path.with_name(f'.{path.name}.tmp.png')
    figure.savefig(tmp, dpi=110, bbox_inches='tight')
    os.replace(tmp, path)
    _pyplot().close(figure)
    return path.name


def _taxonomy(metrics: dict[str, Any]) -> Taxonomy:
    """The taxonomy a run was scored in (nuScenes-16 for metrics that do not name one)."""
    return load_taxonomy(metrics.get('data', {}).get('taxonomy') or 'nuscenes16')


def plot_per_class_iou(metrics: dict[str, Any], path: Path) -> str:
    plt = _pyplot()
    names = list(metrics['per_class_iou'])
    student = [metrics['per_class_iou'].get(n) for n in names]
    teacher = metrics.get('teacher_per_class_iou')
    figure, axes = plt.subplots(figsize=(8, 5))
    rows = np.arange(len(names))
    height = 0.4 if teacher else 0.8
    axes.barh(rows, [v or 0.0 for v in student], height=height, label='3D student (all points)')
    if teacher:
        axes.barh(rows + height, [teacher.get(n) or 0.0 for n in names], height=height,
                  label='2D teacher (visible points)', color='tab:orange')
    axes.set_yticks(rows + (height / 2 if teacher else 0), names)
    axes.invert_yaxis()
    axes.set_xlabel('IoU (%)')
    axes.set_xlim(0, 100)
    axes.set_title(f"{metrics['protocol']}: mIoU {metrics['miou']}%")
    axes.legend(loc='lower right')
    return _save(figure, path)


def plot_confusion(confusion: NDArray[np.int64], path: Path, title: str,
                   class_names: Sequence[str] | None = None) -> str:
    plt = _pyplot()
    names = list(class_names or load_taxonomy('nuscenes16').names)
    counts = confusion[1:, 1:].astype(np.float64)
    totals = confusion[1:, :].sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    figure, axes = plt.subplots(figsize=(7.5, 6.5))
    image = axes.imshow(share, cmap='Blues', vmin=0, vmax=1)
    axes.set_xticks(range(len(names)), names, rotation=90)
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel('predicted')
    axes.set_ylabel('true')
    axes.set_title(title)
    figure.colorbar(image, ax=axes, label='share of the true class')
    return _save(figure, path)


def _colors(labels: NDArray[np.uint16], taxonomy: Taxonomy) -> NDArray[np.float64]:
    palette = np.array(taxonomy.colors, dtype=np.float64) / 255.0  # row 0: ignore
    return palette[np.minimum(labels, len(palette) - 1)]


def plot_bev(sample: BevSample, path: Path, extent_m: float = 50.0,
             taxonomy: Taxonomy | None = None) -> str:
    plt = _pyplot()
    taxonomy = taxonomy or load_taxonomy('nuscenes16')
    keep = np.all(np.abs(sample.xy_m) <= extent_m, axis=1)
    xy = sample.xy_m[keep]
    figure, axes = plt.subplots(1, 2, figsize=(12, 6), sharex=True, sharey=True)
    for ax, labels, title in ((axes[0], sample.true_labels[keep], 'ground truth'),
                              (axes[1], sample.predicted_labels[keep], 'prediction')):
        ax.scatter(xy[:, 0], xy[:, 1], s=0.3, c=_colors(labels, taxonomy), linewidths=0)
        ax.set_title(f'{title} ({sample.key})')
        ax.set_aspect('equal')
        ax.set_xlabel('x (m)')
    axes[0].set_ylabel('y (m)')
    handles = [plt.Line2D([], [], marker='o', ls='',
                          color=_colors(np.array([i + 1]), taxonomy)[0], label=name)
               for i, name in enumerate(taxonomy.names)]
    figure.legend(handles=handles, loc='lower center', ncol=8, fontsize=7)
    return _save(figure, path)


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation, None with fewer than 3 points or no variance."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def gap_scatter(runs: Sequence[dict[str, Any]], path: Path, *, y_key: str = 'miou',
                y_label: str = 'zero-shot mIoU (%)') -> str:
    """Relational gap (x) against ``run[y_key]`` for runs that carry ``gap``; one colour per
    ``run['label']``."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 4.5))
    groups: dict[str, list[tuple[float, float]]] = {}
    for run in runs:
        if run.get('gap') and run.get(y_key) is not None:
            groups.setdefault(str(run.get('label', 'run')), []).append(
                (run['gap']['relational_gap'], run[y_key]))
    for label, points in sorted(groups.items()):
        xs, ys = zip(*points, strict=True)
        axes.scatter(xs, ys, label=label)
    all_points = [p for pts in groups.values() for p in pts]
    r = pearson([p[0] for p in all_points], [p[1] for p in all_points])
    axes.set_xlabel('structural gap: mean |KKᵀ − QQᵀ| (lower is closer)')
    axes.set_ylabel(y_label)
    axes.set_title('gap vs quality' + (f' (Pearson r = {r:.2f})' if r is not None else ''))
    # Beside the axes: with a run group per teacher and loss, a legend inside hides points.
    axes.legend(loc='upper left', bbox_to_anchor=(1.02, 1.0), fontsize='small')
    return _save(figure, path)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join('' if v is None else str(v) for v in row) + ' |' for row in rows]
    return '\n'.join(lines)


def write_html(markdown_lines: Sequence[str], path: Path, title: str) -> None:
    """A self-contained HTML page from simple Markdown (headings, tables, images, text)."""
    body: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if table:
            head, *rest = table
            body.append('<table><tr>' + ''.join(f'<th>{html.escape(c)}</th>' for c in head)
                        + '</tr>' + ''.join('<tr>' + ''.join(f'<td>{html.escape(c)}</td>'
                                                             for c in row) + '</tr>'
                                            for row in rest) + '</table>')
            table.clear()

    for line in '\n'.join(markdown_lines).splitlines():
        if line.startswith('|'):
            cells = [c.strip() for c in line.strip('|').split('|')]
            if not all(set(c) <= set('-:') for c in cells):
                table.append(cells)
            continue
        flush()
        if line.startswith('#'):
            level = len(line) - len(line.lstrip('#'))
            body.append(f'<h{level}>{html.escape(line[level:].strip())}</h{level}>')
        elif line.startswith('![') and '](' in line:
            alt, src = line[2:].split('](', 1)
            body.append(f'<p><img src="{html.escape(src.rstrip(")"))}" '
                        f'alt="{html.escape(alt)}" style="max-width:100%"></p>')
        elif line.strip():
            body.append(f'<p>{html.escape(line)}</p>')
    flush()
    style = ('body{font-family:sans-serif;max-width:1000px;margin:auto}'
             'table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}')
    write_text_atomic(path, f'<!doctype html><html><head><meta charset="utf-8"><title>'
                            f'{html.escape(title)}</title><style>{style}</style></head><body>'
                            + '\n'.join(body) + '</body></html>\n')


def write_report(out_dir: str | os.PathLike[str], results: Sequence[EvalResult]) -> Path:
    """Write metrics.json, report.md, report.html and the plots of one or several runs.

    One run: ``metrics.json`` is its metrics. Several (the same protocol on several
    checkpoints): ``metrics.json`` holds ``{"runs": [...]}`` plus the correlation of the gap
    with mIoU, and the report adds the gap-vs-mIoU scatter. Returns the report.md path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = ['# relkd-eval report', '']
    runs = []
    for index, result in enumerate(results):
        metrics = result.metrics
        tag = '' if len(results) == 1 else f'_{index}'
        name = Path(metrics['checkpoint']['path']).name
        lines += [f"## {metrics['protocol']}: {name} on {metrics['data']['path']}", '',
                  f"checkpoint sha256 {metrics['checkpoint']['sha256'][:16]}…, step "
                  f"{metrics['checkpoint']['step']}, losses {metrics['checkpoint']['losses']}", '']
        header = ['class', 'IoU (%)']
        teacher = metrics.get('teacher_per_class_iou')
        if teacher:
            header += ['student, visible points', 'teacher, visible points']
        rows = []
        for cls in metrics['per_class_iou']:
            row = [cls, metrics['per_class_iou'].get(cls)]
            if teacher:
                row += [metrics['visible']['per_class_iou'].get(cls), teacher.get(cls)]
            rows.append(row)
        summary = ['**mIoU**', f"**{metrics['miou']}**"]
        if teacher:
            summary += [f"**{metrics['visible']['miou']}**", f"**{metrics['teacher_miou']}**"]
        lines += [markdown_table(header, [*rows, summary]), '']
        if metrics.get('gap'):
            gap = metrics['gap']
            lines += [f"Structural gap: CKA {gap['cka']}, mean |KKᵀ − QQᵀ| "
                      f"{gap['relational_gap']} over {gap['num_pairs']} pairs ({gap['sampling']}).",
                      '']
        if 'labelled_scans' in metrics:
            lines += [f"Labelled scans ({100 * metrics['label_fraction']:g}% of "
                      f"{metrics['labelled_from']}): {', '.join(metrics['labelled_scans'])}; "
                      f"evaluated on {metrics['evaluated_scans']} scans.", '']
        plots = [plot_per_class_iou(metrics, out / f'per_class_iou{tag}.png'),
                 plot_confusion(result.confusion, out / f'confusion{tag}.png',
                                f"{metrics['protocol']} confusion (rows: true class)",
                                list(metrics['per_class_iou']))]
        if result.bev is not None:
            plots.append(plot_bev(result.bev, out / f'bev{tag}.png',
                                  taxonomy=_taxonomy(metrics)))
        lines += [f'![{p}]({p})' for p in plots] + ['']
        runs.append({**metrics, 'label': name})
    if len(results) == 1:
        payload: dict[str, Any] = results[0].metrics
    else:
        with_gap = [r for r in runs if r.get('gap') and r.get('miou') is not None]
        r = pearson([g['gap']['relational_gap'] for g in with_gap],
                    [g['miou'] for g in with_gap])
        payload = {'runs': [res.metrics for res in results], 'gap_miou_pearson': r}
        if with_gap:
            lines += ['## Structural gap vs mIoU', '',
                      f'Pearson correlation over {len(with_gap)} runs: '
                      f"{'n/a' if r is None else f'{r:.3f}'}", '',
                      f"![gap]({gap_scatter(runs, out / 'gap_vs_miou.png')})", '']
    write_text_atomic(out / 'metrics.json', json.dumps(payload, indent=2) + '\n')
    write_text_atomic(out / 'report.md', '\n'.join(lines))
    write_html(lines, out / 'report.html', 'relkd-eval report')
    return out / 'report.md'
