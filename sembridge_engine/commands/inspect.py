"""`sembridge inspect PATH`: what is in an MS archive or RGB folder, and what is wrong with it."""
from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="MS archive (folder of class folders or CSV manifest) or RGB imagery folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a report")
    parser.add_argument("--modality", choices=("auto", "ms", "rgb"), default="auto",
                        help="imagery kind; auto reads a sample file (>3 bands or not uint8 -> ms)")
    parser.add_argument("--sample", type=int, default=500, metavar="N",
                        help="files whose pixels are read for per-band statistics and checks (default 500)")
    parser.add_argument("--workers", type=int, default=None, help="reader threads (default: one per core)")


def run(args) -> int:
    from pathlib import Path

    from sembridge_engine.data.summary import summarise_imagery

    if not Path(args.path).exists():
        print(f"error: path does not exist: {args.path}", file=sys.stderr)
        return 2
    try:
        summary = summarise_imagery(args.path, args.modality, sample=args.sample, workers=args.workers)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_report(summary))
    return 0


def format_report(summary: dict) -> str:
    """The human-readable form of ``summarise_imagery``'s dict."""
    kind = "MS archive" if summary["modality"] == "ms" else "RGB imagery"
    label_kind = ", multi-label" if summary["multi_label"] else ""
    lines = [f"{kind}: {summary['root']}",
             f"{len(summary['classes'])} classes, {summary['n_files']} files{label_kind}"]
    width = max((len(name) for name in summary["classes"]), default=0)
    lines += [f"  {name:<{width}}  {count:>6}" for name, count in summary["classes"].items()]
    preset = f" (preset {summary['preset']})" if summary["preset"] else " (no matching preset: use 'custom')"
    lines.append(f"Bands: {summary['band_count']}{preset}: {' '.join(summary['band_names'])}")
    lines.append(f"Data types: {', '.join(summary['dtypes']) or '-'}")
    lines.append("Sizes: " + (", ".join(f"{size} ({count})" for size, count in summary["size_counts"].items()) or "-"))
    crs = summary["crs"]
    not_georeferenced = f"; {summary['ungeoreferenced_files']} file(s) without CRS" if summary["ungeoreferenced_files"] else ""
    lines.append(f"CRS ({len(crs)} distinct): {', '.join(crs) or 'none'}{not_georeferenced}")
    lines.append(f"Nodata: {', '.join(str(value) for value in summary['nodata']) or 'none'}")
    stats = summary["band_stats"]
    if stats:
        sampled = "a sample of " if stats["sampled"] else ""
        lines.append(f"Per-band statistics (file units, {sampled}{stats['files']} files):")
        name_width = max(len(name) for name in summary["band_names"])
        for name, mean, std in zip(summary["band_names"], stats["mean"], stats["std"]):
            lines.append(f"  {name:<{name_width}}  mean {mean:>10.2f}  std {std:>10.2f}")
    problems = summary["problems"]
    lines.append(f"Problems ({len(problems)}):" if problems else "Problems: none")
    lines += [f"  {problem['path']}: {problem['message']}" for problem in problems]
    return "\n".join(lines)
