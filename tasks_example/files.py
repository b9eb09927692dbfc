"""File tasks: analyse a Python source file, export records to CSV."""

from __future__ import annotations

import ast
import csv
import hashlib
from pathlib import Path
from typing import Any

from runtime import set_progress, task


@task(timeout_s=60)
def analyse_source(path: str) -> dict[str, Any]:
    """Lines, blank and comment lines, functions, classes and imports of a Python file, and
    its sha256. A file that does not parse fails the job with its SyntaxError."""
    data = Path(path).read_bytes()
    text = data.decode("utf-8", errors="replace")
    tree = ast.parse(data, filename=path)
    functions = classes = imports = 0
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions += 1
        elif isinstance(node, ast.ClassDef):
            classes += 1
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            imports += 1
    lines = text.splitlines()
    return {
        "path": path,
        "bytes": len(data),
        "lines": len(lines),
        "blank_lines": sum(1 for line in lines if not line.strip()),
        "comment_lines": sum(1 for line in lines if line.lstrip().startswith("#")),
        "functions": functions,
        "classes": classes,
        "imports": imports,
        "sha256": hashlib.sha256(data).hexdigest(),
    }


@task(timeout_s=300)
def export_csv(records: list[dict[str, Any]], path: str) -> dict[str, Any]:
    """Write ``records`` (a list of flat dicts) to the CSV file ``path``; columns are the
    union of the keys in first-seen order. Returns the row and column counts."""
    columns: list[str] = []
    for r in records:
        for k in r:
            if k not in columns:
                columns.append(k)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for i, r in enumerate(records):
            writer.writerow(r)
            if i % 500 == 0:
                set_progress(i / max(1, len(records)), f"{i}/{len(records)} rows")
    set_progress(1.0, f"{len(records)}/{len(records)} rows")
    return {"path": str(out), "rows": len(records), "columns": len(columns)}


class WordCount:
    """Count words in text files (a class task: ``run(self, params)``), reporting progress."""

    def run(self, params: dict[str, Any]) -> dict[str, Any]:
        paths = params["paths"]
        counts: dict[str, int] = {}
        for i, p in enumerate(paths, 1):
            for word in Path(p).read_text(encoding="utf-8", errors="replace").split():
                counts[word] = counts.get(word, 0) + 1
            set_progress(i / len(paths), f"{i}/{len(paths)} files")
        top = sorted(counts.items(), key=lambda kv: -kv[1])[: int(params.get("top", 10))]
        return {"files": len(paths), "distinct_words": len(counts), "top": top}
