"""The learning-curve plot of a run: ``curves.svg``, written with no plotting library."""
from __future__ import annotations

import math

from .checkpoint import write_text_atomic

__all__ = ["write_curves_svg"]


def _polyline(xs, ys, x0, y0, w, h, xmin, xmax, ymin, ymax, color):
    if not xs:
        return ""
    sx = w / max(xmax - xmin, 1e-12)
    sy = h / max(ymax - ymin, 1e-12)
    pts = " ".join(f"{x0 + (x - xmin) * sx:.1f},{y0 + h - (y - ymin) * sy:.1f}" for x, y in zip(xs, ys))
    return f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>'


def write_curves_svg(history: list, path: str) -> None:
    """Two panels: training loss, and validation Recall@20 / NDCG@20, against the epoch."""
    W, H, pad = 360, 220, 40
    panels = [("training loss", [("loss", "#1f77b4")]),
              ("validation", [("valid_recall@20", "#d62728"), ("valid_ndcg@20", "#2ca02c")])]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{H}" '
             f'font-family="sans-serif" font-size="11">', '<rect width="100%" height="100%" fill="white"/>']
    for p, (title, series) in enumerate(panels):
        ox = p * W
        data = [(name, color, [(r["epoch"], r[name]) for r in history
                               if r.get(name) is not None and math.isfinite(r[name])]) for name, color in series]
        pts = [pt for _, _, d in data for pt in d]
        parts.append(f'<text x="{ox + W / 2}" y="14" text-anchor="middle">{title}</text>')
        x0, y0, w, h = ox + pad, 22, W - pad - 10, H - 22 - pad + 10
        parts.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#888"/>')
        if not pts:
            continue
        xmin, xmax = min(x for x, _ in pts), max(x for x, _ in pts)
        ymin, ymax = min(y for _, y in pts), max(y for _, y in pts)
        if ymax - ymin < 1e-12:
            ymin, ymax = ymin - 0.5, ymax + 0.5
        for frac in (0.0, 0.5, 1.0):
            yv = ymin + frac * (ymax - ymin)
            parts.append(f'<text x="{x0 - 3}" y="{y0 + h - frac * h + 4:.1f}" text-anchor="end">{yv:.4g}</text>')
        parts.append(f'<text x="{x0}" y="{y0 + h + 14}">{xmin}</text>')
        parts.append(f'<text x="{x0 + w}" y="{y0 + h + 14}" text-anchor="end">epoch {xmax}</text>')
        for k, (name, color, d) in enumerate(data):
            parts.append(_polyline([x for x, _ in d], [y for _, y in d], x0, y0, w, h, xmin, xmax, ymin, ymax, color))
            parts.append(f'<text x="{x0 + 6}" y="{y0 + 14 + 13 * k}" fill="{color}">{name}</text>')
    parts.append("</svg>")
    write_text_atomic("\n".join(parts) + "\n", path)
