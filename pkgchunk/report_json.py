"""The ``--json`` documents of ``plan``, ``rechunk`` and ``verify`` (schemas in docs/json.md)."""

from __future__ import annotations

from typing import Any

from pkgchunk.rechunk import Planned, RechunkResult
from pkgchunk.verify import VerifyResult


def plan_json(planned: Planned) -> dict[str, Any]:
    return {
        "rules": planned.rules_name,
        "layers": [
            {
                "name": layer.name,
                "packages": list(layer.packages),
                "groups": list(layer.groups),
                "files": len(layer.paths),
                "bytes": layer.bytes,
                "change_probability": round(layer.change_probability, 6),
            }
            for layer in planned.outcome.plan.layers
        ],
    }


def rechunk_json(result: RechunkResult) -> dict[str, Any]:
    doc = plan_json(result.planned)
    written = {w.name: w for w in result.write.layers}
    for layer in doc["layers"]:
        w = written[layer["name"]]
        layer.update(
            digest=w.digest, diff_id=w.diff_id, compressed_bytes=w.size, reused=w.reused
        )
    doc.update(
        ref=result.write.ref,
        manifest_digest=result.write.manifest_digest,
        config_digest=result.write.config_digest,
        previous=result.previous,
        warnings=list(result.warnings),
    )
    return doc


def verify_json(a: str, b: str, result: VerifyResult) -> dict[str, Any]:
    return {
        "a": a,
        "b": b,
        "identical": result.identical,
        "paths": result.paths,
        "differences": [
            {"path": "/" + d.path if d.path else None, "what": d.what}
            for d in result.differences
        ],
    }
